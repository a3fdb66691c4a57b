"""More hosts: `hosted-engine --join-bundle FILE` on a deployed host writes
what a new host needs, `hosted-engine --deploy --join=FILE` on the new host
joins it.

The bundle (JSON, mode 0600: it holds the cluster CA's key and the cluster
key) carries the cluster's CA, the cluster key, the deployed host's
configuration and public answers, and the etcd endpoints. The joining host
asks only what is its own (its name, address, bridge and BMC, and
admin@internal's password to register itself), takes a free sanlock host id
through etcd (never by hand), becomes an etcd member with its own
certificate, and starts its broker and agent.
"""
from __future__ import annotations

import base64
import json
import os
import time

from keel_common import etcdclient, ini
from keel_common.config import EtcdConfig, parse_host_config
from keel_common.keys import Keys

from .runner import Progress, Step, StepFailed
from . import steps

FORMAT = "keel-join-bundle/1"
MAX_HOST_ID = 2000
# answers that are each host's own; every other one is the cluster's (the
# bridge too: the engine puts the management network on the same bridge name
# on every host)
OWN_ANSWERS = ("host_name", "host_address", "bmc_address", "bmc_port", "bmc_user",
               "bmc_password_file", "bmc_options", "admin_password_file", "vm_memory_mb", "vm_vcpus")


class JoinError(Exception):
    """str() is one line."""


# ------------------------------------------------------------------ the bundle

def write_bundle(path: str) -> str:
    """On a deployed host: the bundle a new host joins with."""
    from .pki import Pki, PkiError
    from .record import DEPLOYED, DeployRecord
    record = DeployRecord.load()
    if record is None or record.status != DEPLOYED:
        raise JoinError("this host is not deployed (hosted-engine --deploy first)")
    cfg = parse_host_config(_read(steps.HOST_CONFIG), steps.HOST_CONFIG)
    try:
        pki = Pki(steps.PKI_DIR).export_bundle().decode()
    except PkiError as e:
        raise JoinError(str(e)) from None
    doc = {"format": FORMAT, "made": time.time(), "by": cfg.hostname, "pki": pki,
           "cluster_key": base64.b64encode(_read(steps.CLUSTER_KEY, binary=True)).decode(),
           "host_config": _read(steps.HOST_CONFIG), "answers": record.answers,
           "etcd_endpoints": list(cfg.etcd.endpoints)}
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f)
    os.replace(path + ".tmp", path)
    return (f"Join bundle written to {path} (mode 0600; it holds the cluster's keys: copy it to the new "
            f"host over ssh, then remove it). On the new host: hosted-engine --deploy --join={path}")


def read_bundle(path: str) -> dict:
    try:
        doc = json.loads(_read(path))
    except (OSError, ValueError) as e:
        raise JoinError(f"{path}: not a join bundle ({getattr(e, 'strerror', None) or e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise JoinError(f"{path}: not a join bundle (made with hosted-engine --join-bundle)")
    missing = [k for k in ("pki", "cluster_key", "host_config", "answers", "etcd_endpoints") if k not in doc]
    if missing:
        raise JoinError(f"{path}: the join bundle lacks {', '.join(missing)}")
    return doc


def preset_of(bundle: dict) -> dict:
    """The cluster's answers: what a joining host does not choose."""
    return {k: v for k, v in bundle["answers"].items() if k not in OWN_ANSWERS}


def _read(path: str, binary: bool = False):
    with open(path, "rb" if binary else "r") as f:
        return f.read()


# ------------------------------------------------------------------ host ids through etcd

def _with_client(cfg: EtcdConfig, fn, timeout: float = 10.0):
    try:
        return etcdclient.on_first(cfg, timeout, fn)
    except etcdclient.EtcdUnreachable as e:
        raise JoinError(str(e)) from None


def claim_host_id(cfg: EtcdConfig, name: str, first: int = 1) -> int:
    """The lowest free sanlock host id, claimed for `name` in one etcd
    transaction (two hosts joining at once never get the same); the id
    `name` holds already when it retries."""
    keys = Keys(cfg.prefix)

    def claim(c):
        held = {int(meta.key.decode().rsplit("/", 1)[1]): value.decode()
                for value, meta in c.get_prefix(keys.host_ids_prefix)}
        for host_id, holder in held.items():
            if holder == name:
                return host_id
        for host_id in range(first, MAX_HOST_ID + 1):
            if host_id in held:
                continue
            key = keys.host_id_claim(host_id)
            ok, _ = c.transaction(compare=[c.transactions.version(key) == 0],
                                  success=[c.transactions.put(key, name)], failure=[])
            if ok:
                return host_id
        raise JoinError(f"every sanlock host id (1-{MAX_HOST_ID}) is taken")
    return _with_client(cfg, claim)


def release_host_id(cfg: EtcdConfig, host_id: int, name: str) -> bool:
    """Free `host_id` if `name` holds it; its BMC record goes with it."""
    keys = Keys(cfg.prefix)

    def release(c):
        key = keys.host_id_claim(host_id)
        ok, _ = c.transaction(compare=[c.transactions.value(key) == name],
                              success=[c.transactions.delete(key), c.transactions.delete(keys.bmc(host_id))],
                              failure=[])
        return ok
    return _with_client(cfg, release)


# ------------------------------------------------------------------ the join's steps

def cluster_config(ctx) -> EtcdConfig:
    """The cluster's etcd as the bundle names it, with this host's client certificate."""
    from .etcd_member import client_config
    from .pki import Pki
    return client_config(Pki(steps.PKI_DIR), ctx.bundle["etcd_endpoints"])


def keys_step(ctx, p: Progress) -> None:
    from .etcd_member import ensure_client_cert, ensure_member_cert
    from .pki import Pki, PkiError
    if not os.path.exists(steps.CLUSTER_KEY):
        ctx.record.will_make("file", steps.CLUSTER_KEY)
        os.makedirs(steps.CONFIG_DIR, exist_ok=True)
        fd = os.open(steps.CLUSTER_KEY + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(ctx.bundle["cluster_key"]))
        os.replace(steps.CLUSTER_KEY + ".tmp", steps.CLUSTER_KEY)
    ctx.record.will_make("dir", steps.PKI_DIR)
    pki = Pki(steps.PKI_DIR)
    try:
        pki.import_bundle(ctx.bundle["pki"].encode())
        ensure_member_cert(steps.etcd_member(ctx))
        ensure_client_cert(pki)
    except PkiError as e:
        raise StepFailed(str(e)) from None
    p.note(f"the cluster's CA ({pki.fingerprint()}) and key installed; this host's certificates issued")


def host_id_step(ctx, p: Progress) -> None:
    from .etcd_member import client_config
    from .pki import Pki
    own = steps.etcd_member(ctx).client_url
    cfg = client_config(Pki(steps.PKI_DIR), [own] + [e for e in ctx.bundle["etcd_endpoints"] if e != own])
    try:
        ctx.host_id = claim_host_id(cfg, ctx.answers.host_name, first=2)
    except JoinError as e:
        raise StepFailed(f"cannot take a host id: {e}", "the joining host must reach the cluster's etcd "
                         f"({', '.join(cfg.endpoints)})") from None
    ctx.record.will_make("host-id", f"{ctx.host_id} {ctx.answers.host_name} {','.join(cfg.endpoints)}")
    ctx.record.answers["host_id"] = ctx.host_id
    ctx.record.save()
    p.note(f"sanlock host id {ctx.host_id} taken for {ctx.answers.host_name}")


def etcd_step(ctx, p: Progress) -> None:
    from . import etcd_member as em
    from .services import unit_text
    m = steps.etcd_member(ctx)
    cfg = cluster_config(ctx)
    # undone newest first: the member leaves the cluster, then its unit
    # stops, then its data goes
    ctx.record.will_make("dir", steps.ETCD_DATA)
    ctx.record.will_make("unit", steps.ETCD_UNIT)
    ctx.record.will_make("etcd-member", f"{m.name} {','.join(cfg.endpoints)}")
    try:
        cluster = em.add_member(cfg, m.name, m.peer_url, 20)
    except em.EtcdMemberError as e:
        raise StepFailed(f"etcd does not take this host as a member: {e}") from None
    os.makedirs(steps.ETCD_DATA, mode=0o700, exist_ok=True)
    argv = em.argv(m, cluster, "existing", etcd=steps.shutil.which("etcd") or "etcd")
    steps._start_unit(ctx, steps.ETCD_UNIT, unit_text("Keel cluster store (etcd, TLS)", argv,
                                                      after=("network-online.target",), restart="on-failure"))
    own = em.client_config(m.pki, [m.client_url])
    p.wait(f"this host's etcd member to join the cluster ({len(cluster)} members)",
           lambda: em.healthy(own, 2.0)[0] or steps._unit_failed(ctx, steps.ETCD_UNIT), timeout=90,
           todo=f"see the unit's log (journalctl -u {steps.ETCD_UNIT})")
    p.note(f"etcd member {m.name} at {m.client_url}; the cluster has {len(cluster)} members")


def host_config_text(ctx) -> str:
    """The deployed host's configuration, made this host's: its id, name,
    address, etcd endpoints (its own member first) and bridge."""
    a = ctx.answers
    f = ini.IniFile(ctx.bundle["host_config"], "the join bundle's host configuration")
    values = {sec: {k: f.raw(sec, k) for k in f.keys(sec)} for sec in
              ("host", "etcd", "storage", "engine", "network", "timing", "score") if f.has_section(sec)}
    own = steps.etcd_member(ctx).client_url
    values["host"].update(host_id=ctx.host_id, hostname=a.host_name, address=a.host_address)
    values["etcd"]["endpoints"] = ",".join([own] + [e for e in ctx.bundle["etcd_endpoints"] if e != own])
    values["engine"]["bridge"] = a.bridge
    values["network"]["management_interface"] = a.bridge
    text = ini.render(values)
    parse_host_config(text, steps.HOST_CONFIG)
    return text


def host_config_step(ctx, p: Progress) -> None:
    steps._write_file(ctx, steps.HOST_CONFIG, host_config_text(ctx), 0o640)
    p.note(f"{steps.HOST_CONFIG} written (host id {ctx.host_id})")


def register_step(ctx, p: Progress) -> None:
    from .engine_api import Api, EngineApiError, wait_signin
    a = ctx.answers
    api = Api(steps.ADMIN_USER, a.admin_password, ctx.engine_url)
    try:
        wait_signin(api, 60)
        if api.find("hosts", a.host_name) is None:
            api.call("POST", "/hosts", {"name": a.host_name, "address": a.host_address,
                                        "cluster": {"name": a.cluster}})
            p.note(f"host {a.host_name} ({a.host_address}) added to cluster {a.cluster}")
        p.wait(f"the engine to see {a.host_name} up",
               lambda: (api.find("hosts", a.host_name) or {}).get("status") == "up", timeout=120,
               todo="the engine reaches hosts' libvirtd over the network: check it listens")
        steps.register_fence_agent(api, a, p)
    except EngineApiError as e:
        raise StepFailed(str(e), "fix the cause and re-run hosted-engine --deploy --join") from None


# The host id is taken once this host is an etcd member, so that it is given
# back (undone first) while that member still runs.
STEPS = [Step("Pre-flight checks", steps.preflight), Step("Shared storage", steps.storage),
         Step("Cluster key and certificates", keys_step), Step("etcd, a new member (TLS)", etcd_step),
         Step("Host id", host_id_step), Step("This host's configuration", host_config_step),
         Step("HA broker and agent", steps.ha_services), Step("This host's BMC", steps.bmc),
         Step("Register the host and its BMC", register_step)]
