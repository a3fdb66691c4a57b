"""`hosted-engine --set-bmc / --remove-bmc`: the hosts' BMCs as every HA
agent knows them (for fencing the engine's host), and their lines in
`--vm-status`. The password is read from a file, the environment or a
prompt, encrypted here with the cluster key, and never printed."""
from __future__ import annotations

import datetime
import getpass
import os
import sys

from keel_common.bmc import BmcError, BmcRecord, ClusterKey, label

PASSWORD_ENV = "KEEL_BMC_PASSWORD"


def add_arguments(acts, p) -> None:
    acts.add_argument("--set-bmc", action="store_true",
                      help="store a host's BMC (IPMI) for the HA agents: lets them fence the engine's "
                           "host in seconds when it loses power")
    acts.add_argument("--remove-bmc", action="store_true", help="forget a host's BMC (the agents then "
                      "wait for sanlock's expiry of a dead engine host's lease)")
    acts.add_argument("--generate-cluster-key", action="store_true",
                      help="write the cluster key ([host] cluster_key_file) on the first host; copy that "
                           "file to every other host")
    g = p.add_argument_group("with --set-bmc / --remove-bmc")
    g.add_argument("--bmc-address", metavar="ADDR", help="the BMC's IP address or host name")
    g.add_argument("--bmc-port", type=int, default=623, metavar="PORT", help="the BMC's UDP port (default 623)")
    g.add_argument("--bmc-user", metavar="NAME", help="the IPMI user")
    g.add_argument("--bmc-password-file", metavar="PATH",
                   help=f"a file holding the IPMI password (else ${PASSWORD_ENV}, else a prompt)")
    g.add_argument("--bmc-privilege", default="administrator", choices=("operator", "administrator"),
                   help="the IPMI privilege level (default administrator)")


def generate_cluster_key(path: str) -> str:
    if os.path.exists(path):
        raise BmcError(f"{path} exists already: every host must hold the same key, so it is never "
                       "replaced (remove it first only if no BMC password was stored with it)")
    ClusterKey.create(path)
    return (f"Cluster key written to {path} (mode 0600). Copy it to every host, same path, "
            "before setting BMCs there.")


def read_password(args) -> str:
    if args.bmc_password_file:
        try:
            with open(args.bmc_password_file, encoding="utf-8") as f:
                password = f.readline().rstrip("\n")
        except OSError as e:
            raise BmcError(f"cannot read --bmc-password-file {args.bmc_password_file}: {e.strerror}") from None
    elif os.environ.get(PASSWORD_ENV):
        password = os.environ[PASSWORD_ENV]
    elif sys.stdin.isatty():
        password = getpass.getpass("BMC password: ")
    else:
        raise BmcError(f"no BMC password: give --bmc-password-file, set ${PASSWORD_ENV}, or run on a terminal")
    if not password:
        raise BmcError("the BMC password is empty")
    if len(password.encode()) > 20:
        raise BmcError("the BMC password is longer than IPMI's 20 bytes")
    return password


def record_from_args(args, host_id: int, key_file: str) -> BmcRecord:
    if not args.bmc_address or not args.bmc_user:
        raise BmcError("--set-bmc needs --bmc-address and --bmc-user")
    # Validate everything but the password first: a bad port is said before a prompt.
    BmcRecord(host_id, args.bmc_address, args.bmc_user, "-", args.bmc_port, args.bmc_privilege)
    token = ClusterKey(key_file).encrypt(read_password(args))
    return BmcRecord(host_id, args.bmc_address.strip(), args.bmc_user, token, args.bmc_port, args.bmc_privilege)


def _fence_text(fence: dict) -> str:
    when = datetime.datetime.fromtimestamp(fence.get("ended") or fence["started"]).strftime("%Y-%m-%d %H:%M:%S")
    what = {"fencing": "being fenced", "fenced": "fenced", "failed": "fence failed"}.get(fence["state"],
                                                                                     fence["state"])
    return f"{what} by host {fence['by']} at {when}" + (f" ({fence['detail']})" if fence.get("detail") else "")


def status_lines(status: dict, hid: str) -> list[str]:
    """The BMC and last-fence lines of one host in `--vm-status`."""
    bmc = (status.get("bmcs") or {}).get(hid)
    lines = [f"{'BMC':<34} : " + (label(bmc["username"], bmc["address"], bmc["port"]) if bmc else
                                  "none (a dead engine host is not fenced: the engine waits for its lease to expire)")]
    fence = (status.get("fences") or {}).get(hid)
    if fence:
        lines.append(f"{'Last fence by an agent':<34} : {_fence_text(fence)}")
    return lines


def recordless_lines(status: dict) -> list[str]:
    """Hosts with no record in etcd (powered off, fenced) but a BMC or a fence:
    a fenced host's record is gone with its etcd lease, its fence is not."""
    shown = set(status.get("hosts") or {})
    lines = []
    for hid in sorted(set(status.get("bmcs") or {}) | set(status.get("fences") or {}), key=int):
        if hid in shown:
            continue
        lines += ["", f"--== Host id {hid}: no record (not running the HA services, or powered off) ==--", ""]
        lines += status_lines(status, hid)
    return lines
