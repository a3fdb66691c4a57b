"""Looking into running hosts from the root namespace: which daemons run
(mapping each host's PID-namespace pids to real pids), where the engine VM
runs, etcd health and the HA records. Read-only; bounded by timeouts."""
from __future__ import annotations

import json
import os
import subprocess
import urllib.request

from . import hosts, net, procs
from .layout import ENGINE_VM_NAME, LEASE_NAME, HostLayout, LabLayout, read_json

ENGINE_MARKER = f"guest={ENGINE_VM_NAME}"


def ns_pid_map(host: HostLayout) -> dict[int, int]:
    """{pid inside the host: pid in the root namespace} for the host's processes."""
    inode = net.netns_inode(host.netns)
    if inode is None:
        return {}
    out = {}
    for pid in procs.pids_in_netns(inode):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("NSpid:"):
                        ids = line.split()[1:]
                        if len(ids) >= 2:
                            out[int(ids[-1])] = pid
                        break
        except OSError:
            continue
    return out


def daemon_pids(host: HostLayout) -> dict[str, int | None]:
    """{daemon: root-namespace pid or None} from the host init's status file."""
    if not hosts.powered_on(host):
        return {}
    status = read_json(host.daemons_file, {}) or {}
    mapping = ns_pid_map(host)
    result = {}
    for name, d in (status.get("daemons") or {}).items():
        real = mapping.get(d.get("pid") or -1)
        result[name] = real if real and procs.alive(real) else None
    return result


def qemu_pids(lab: LabLayout, marker: str) -> dict[str, list[int]]:
    """{host name: [qemu pids]} for every live qemu whose command line has
    `marker`, found in /proc (the ground truth: a qemu process that exists
    can write its disks, whatever libvirt says)."""
    by_inode = {net.netns_inode(h.netns): h.name for h in lab.all_hosts()}
    found: dict[str, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/comm") as f:
                if not f.read().startswith("qemu-system"):
                    continue
        except OSError:
            continue
        if not procs.alive(pid) or not any(marker in a for a in procs.cmdline(pid)):
            continue
        host = by_inode.get(procs.netns_of(pid))
        if host:
            found.setdefault(host, []).append(pid)
    return found


def engine_qemu_pids(lab: LabLayout) -> dict[str, int]:
    """{host name: qemu pid} for every live engine VM process."""
    return {host: pids[-1] for host, pids in qemu_pids(lab, ENGINE_MARKER).items()}


def lease_owner(lab: LabLayout) -> dict:
    """The engine lease as written on the shared storage: owner host id and
    timestamp (0 = free), read directly from disk."""
    try:
        out = subprocess.run(["sanlock", "direct", "dump", lab.lease_file], capture_output=True,
                             text=True, timeout=5).stdout
    except (subprocess.TimeoutExpired, OSError):
        return {"owner": None, "timestamp": None, "held": None}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 7 and f[2] == LEASE_NAME:
            ts, own = int(f[3]), int(f[4])
            return {"owner": own, "generation": int(f[5]), "timestamp": ts, "held": ts != 0}
    return {"owner": None, "timestamp": None, "held": None}


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def tcp_open(address: str, port: int, timeout: float = 1.0) -> bool:
    import socket
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def lab_etcd(lab: LabLayout):
    """How the lab reads the cluster's etcd: its own (plain HTTP) on the
    lab's etcd hosts; on bare hosts, the one the installer set up, with the
    TLS client certificate a deployed host holds (None before a deploy)."""
    from keel_common.config import EtcdConfig, load_host_config
    from keel_common.ini import ConfigError
    if not lab.bare:
        return EtcdConfig(endpoints=tuple(lab.etcd_endpoints))
    found, endpoints = None, []
    for h in lab.all_hosts():
        if not os.path.exists(h.config_path):
            continue
        try:
            etcd = load_host_config(h.config_path).etcd
        except (ConfigError, OSError):   # a config half-written by a running deploy: the others'
            continue
        found = found or (h, etcd)
        endpoints += [e for e in etcd.endpoints if e not in endpoints]
    if found is None:
        return None
    h, etcd = found

    def outside(path):   # /etc/keel/... inside the host is its etc-keel dir
        return path and os.path.join(h.config_dir, os.path.relpath(path, "/etc/keel"))
    return EtcdConfig(endpoints=tuple(sorted(endpoints)), prefix=etcd.prefix, ca_cert=outside(etcd.ca_cert),
                      cert=outside(etcd.cert), key=outside(etcd.key))


def etcd_health(lab: LabLayout, timeout: float = 1.5, etcd=None) -> list[dict]:
    """Each member's /health; `etcd`: lab_etcd(lab), if the caller has it."""
    import ssl
    from urllib.parse import urlsplit
    cfg = etcd or lab_etcd(lab)
    if cfg is None:
        return []
    context = None
    if cfg.ca_cert:
        context = ssl.create_default_context(cafile=cfg.ca_cert)
        if cfg.cert:
            context.load_cert_chain(cfg.cert, cfg.key)
    out = []
    for ep in cfg.endpoints:
        name = next((h.name for h in lab.all_hosts() if h.address == urlsplit(ep).hostname), ep)
        try:
            with urllib.request.urlopen(f"{ep}/health", timeout=timeout, context=context) as r:
                body = json.loads(r.read() or b"{}")
            healthy = str(body.get("health")) == "true"
            out.append({"member": name, "endpoint": ep, "healthy": healthy})
        except (OSError, ValueError) as e:
            out.append({"member": name, "endpoint": ep, "healthy": False,
                        "error": e.__class__.__name__})
    return out


def ha_records(lab: LabLayout, timeout: float = 2.0, etcd=None) -> dict[int, dict]:
    """Host records from etcd ({host_id: record}), {} when etcd is unreachable;
    `etcd`: lab_etcd(lab), if the caller has it."""
    from keel_common.etcdclient import EtcdUnreachable, on_first
    from keel_common.keys import Keys
    cfg = etcd or lab_etcd(lab)
    if cfg is None:
        return {}
    keys = Keys(cfg.prefix)

    def read(client):
        records = {}
        for value, _meta in client.get_prefix(keys.hosts_prefix):
            try:
                d = json.loads(value)
                records[int(d["host_id"])] = d
            except (ValueError, KeyError, TypeError):
                continue
        owner, _ = client.get(keys.engine_owner)
        gm, _ = client.get(keys.global_maintenance)
        records[0] = {"owner": json.loads(owner) if owner else None,
                      "global_maintenance": bool(gm and gm.strip() not in (b"0", b""))}
        return records
    try:
        return on_first(cfg, timeout, read)
    except EtcdUnreachable:
        return {}
