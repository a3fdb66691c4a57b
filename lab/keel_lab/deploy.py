"""What `hosted-engine --deploy` needs to install Keel on the lab's bare hosts
(`keel-lab up --engine bare`): an answer file and the files it names, in
DIR/deploy/, for

    keel-lab exec host1 -- hosted-engine --deploy --config-append=DIR/deploy/answers.ini

The answers describe the lab as an administrator would: the NFS export, the
engine VM (its address, MAC and the appliance image the lab built), the
host's bridge and address, the timing profile, the engine's data center and
cluster with the lab's own engine settings, and the host's BMC.
"""
from __future__ import annotations

import json
import os
import secrets

from keel_common import ini

from . import appliance, nfs
from .layout import (BMC_PASSWORD, BMC_USER, BRIDGE_ADDRESS, DEFAULT_DIR, ENGINE_VM_ADDRESS, ENGINE_VM_MAC,
                     ENGINE_VM_NAME, HOST_BRIDGE, HostLayout, LabError, LabLayout, load_state, write_private)

ANSWERS = "answers.ini"
ADMIN_PASSWORD = "admin-password"
BMC_PASSWORD_FILE = "bmc-password"
ENGINE_EXTRA = "engine-extra.conf"
DATA_CENTER = CLUSTER = "Default"
# cipher suite 3: what ipmi_sim offers (ipmitool waits ~10 s for it otherwise)
BMC_OPTIONS = "lanplus=1,cipher=3"


def path(lab: LabLayout, name: str) -> str:
    return os.path.join(lab.deploy_dir, name)


def deploy_answers(lab: LabLayout, host: HostLayout, appliance_dir: str | None = None) -> dict[str, dict]:
    """The answer file of `host`, {section: {key: value}}; the appliance image
    is the one `up` recorded unless given."""
    if appliance_dir is None:
        appliance_dir = (load_state(lab.dir) or {}).get("appliance_image_dir")
        if not appliance_dir:
            raise LabError(f"no appliance image is recorded in {lab.state_file}; run `keel-lab up --engine bare`")
    return {
        "storage": {"connection": nfs.EXPORT, "mount_root": lab.nfs_mount_root,
                    "domain_name": appliance.STORAGE_DOMAIN},
        "engine_vm": {"name": ENGINE_VM_NAME, "hostname": appliance.ENGINE_HOSTNAME,
                      "memory_mb": appliance.MEMORY_MB, "vcpus": appliance.VCPUS, "mac": ENGINE_VM_MAC,
                      "address": f"{ENGINE_VM_ADDRESS}/24", "appliance": appliance_dir,
                      "domain_type": "qemu"},    # nested KVM hangs here: TCG
        "network": {"bridge": HOST_BRIDGE, "gateway": BRIDGE_ADDRESS, "host_address": host.address},
        "host": {"name": host.name, "timing_profile": lab.profile},
        "engine": {"data_center": DATA_CENTER, "cluster": CLUSTER,
                   "admin_password_file": path(lab, ADMIN_PASSWORD),
                   "extra_conf": path(lab, ENGINE_EXTRA)},
        "bmc": {"address": BRIDGE_ADDRESS, "port": host.bmc_port, "user": BMC_USER,
                "password_file": path(lab, BMC_PASSWORD_FILE), "options": BMC_OPTIONS},
    }


def engine_extra_conf(lab: LabLayout) -> str:
    """The lab's own engine settings; `[ha]` and `[storage]` are the installer's."""
    return "# keel-lab: the engine settings of the lab (the installer adds the rest)\n" + \
        ini.render(appliance.lab_engine_settings(lab))


def answers_name(host: HostLayout) -> str:
    return ANSWERS if host.index == 1 else f"answers-{host.name}.ini"


JOIN_BUNDLE = "join.bundle"


def write_files(lab: LabLayout, appliance_dir: str) -> str:
    """DIR/deploy/: the answers of every host (host1 deploys, the others
    join), the admin password (made once), the BMC password and the engine
    settings. Returns host1's answer file."""
    os.makedirs(lab.deploy_dir, exist_ok=True)
    os.chmod(lab.deploy_dir, 0o700)
    admin = path(lab, ADMIN_PASSWORD)
    if not os.path.exists(admin):
        write_private(admin, secrets.token_urlsafe(12) + "\n")
    write_private(path(lab, BMC_PASSWORD_FILE), BMC_PASSWORD + "\n")
    with open(path(lab, ENGINE_EXTRA), "w", encoding="utf-8") as f:
        f.write(engine_extra_conf(lab))
    for h in lab.all_hosts():
        how = "--deploy" if h.index == 1 else "--deploy --join"
        write_private(path(lab, answers_name(h)), f"# keel-lab: `hosted-engine {how}` on {h.name} (bare hosts)\n"
                      + ini.render(deploy_answers(lab, h, appliance_dir)))
    return path(lab, ANSWERS)


def install_commands(lab: LabLayout) -> list[tuple[HostLayout, list[str], list[HostLayout]]]:
    """What installs Keel on the hosts, [(where it runs, hosted-engine argv,
    the hosts it is for)]: the deploy on host1, then (more than one host)
    the join bundle written on host1 for the others and a join on each."""
    bundle = path(lab, JOIN_BUNDLE)
    first, others = lab.all_hosts()[0], lab.all_hosts()[1:]
    out = [(first, ["hosted-engine", "--deploy", f"--config-append={path(lab, ANSWERS)}"], [first])]
    if others:
        out.append((first, ["hosted-engine", f"--join-bundle={bundle}"], others))
    for h in others:
        out.append((h, ["hosted-engine", "--deploy", f"--join={bundle}",
                        f"--config-append={path(lab, answers_name(h))}"], [h]))
    return out


def deploy_commands(lab: LabLayout) -> list[str]:
    """The commands that install Keel on the hosts, as `up` prints them."""
    where = "" if os.path.abspath(lab.dir) == os.path.abspath(DEFAULT_DIR) else f"--dir {lab.dir} "
    return [f"keel-lab exec {where}{h.name} -- {' '.join(argv)}" for h, argv, _ in install_commands(lab)]


def deployed(host: HostLayout) -> bool:
    """Whether a deploy or join finished on the host (its installer's record says so)."""
    try:
        with open(os.path.join(host.path("var-lib-keel"), "deploy.json"), encoding="utf-8") as f:
            return json.load(f).get("status") == "deployed"
    except (OSError, ValueError):
        return False


def deploy_command(lab: LabLayout) -> str:
    return "\n  ".join(deploy_commands(lab))
