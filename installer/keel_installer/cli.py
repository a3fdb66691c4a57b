"""`hosted-engine`: the day-2 commands oVirt users know, against Keel's HA
broker on this host, and the installer (`--deploy`, `--clean-deploy`; see
`deploy.py`).

Exit codes:
  0  done
  1  refused or failed; the message says why (e.g. engine not up for --check-liveliness)
  2  bad usage (unknown option, missing or invalid argument)
  3  the HA broker on this host (or etcd behind it) cannot be reached
  4  the host configuration is missing or invalid
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

from keel_common.bmc import BmcError, ClusterKeyError
from keel_common.brokerclient import BrokerClient, BrokerError
from keel_common.config import ConfigError, load_host_config
from keel_common.pipes import pipe_closed

from . import bmc_cli

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_CONFIG = 0, 1, 2, 3, 4


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2, like every CLI should
        self.print_usage(sys.stderr)
        print(f"hosted-engine: error: {message}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hosted-engine",
                description="Keel hosted engine: status and maintenance of the engine VM's HA.",
                epilog="Exit codes: 0 done; 1 refused or failed; 2 bad usage; 3 HA broker or etcd "
                       "unreachable; 4 bad host configuration.",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="PATH", help="host configuration (default /etc/keel/hosted-engine.conf)")
    acts = p.add_mutually_exclusive_group(required=True)
    acts.add_argument("--deploy", action="store_true",
                      help="install Keel's hosted engine on this host (the first host): asks questions, "
                           "or takes them from --config-append")
    acts.add_argument("--clean-deploy", action="store_true",
                      help="remove everything a deploy made on this host (after a failed deploy; on a "
                           "joined host it leaves etcd and gives its host id back)")
    acts.add_argument("--join-bundle", metavar="FILE",
                      help="on a deployed host: write what a new host needs to join (then: "
                           "hosted-engine --deploy --join=FILE on that host)")
    acts.add_argument("--vm-status", action="store_true", help="show every host's HA record")
    acts.add_argument("--set-maintenance", action="store_true",
                      help="set maintenance: --mode=global (agents leave the engine VM alone), "
                           "local (this host takes no part; the engine moves away), none")
    acts.add_argument("--vm-start", action="store_true", help="ask this host's agent to start the engine VM here")
    acts.add_argument("--vm-shutdown", action="store_true", help="ask this host's agent to shut the engine VM down")
    acts.add_argument("--vm-poweroff", action="store_true", help="ask this host's agent to power the engine VM off")
    acts.add_argument("--check-liveliness", action="store_true", help="check the engine's health URL")
    acts.add_argument("--console", action="store_true",
                      help="attach to the engine VM's serial console (it must run on this host; leave with Ctrl-])")
    acts.add_argument("--set-shared-config", nargs=2, metavar=("KEY", "VALUE"), help="set a cluster-wide setting")
    acts.add_argument("--get-shared-config", metavar="KEY", help="show a cluster-wide setting")
    acts.add_argument("--reinitialize-lockspace", action="store_true",
                      help="rewrite the sanlock lockspace (global maintenance, agents stopped)")
    acts.add_argument("--clean-metadata", action="store_true",
                      help="remove a host's record (default: this host's; the host must be down)")
    bmc_cli.add_arguments(acts, p)
    d = p.add_argument_group("with --deploy")
    d.add_argument("--config-append", action="append", default=[], metavar="FILE",
                   help="an answer file (INI); repeatable, later files win; see docs/installer.md")
    d.add_argument("--join", metavar="FILE", help="join the cluster this bundle comes from "
                   "(written by --join-bundle on a deployed host) instead of deploying a new one")
    d.add_argument("--generate-answer", metavar="FILE",
                   help="write the answers used to FILE (passwords left out)")
    d.add_argument("--answer-file-passwords", action="store_true",
                   help="accept passwords written in answer files (else only *_password_file keys, "
                        "the environment or a prompt)")
    p.add_argument("--json", action="store_true", help="with --vm-status: print JSON (oVirt's shape)")
    p.add_argument("--mode", choices=("global", "local", "none"), help="with --set-maintenance")
    p.add_argument("--host-id", type=int, metavar="N",
                   help="with --clean-metadata, --set-bmc, --remove-bmc: the host (default this one)")
    p.add_argument("--force-cleanup", action="store_true", help="with --clean-metadata: even if the record is live")
    p.add_argument("--force", action="store_true", help="with --reinitialize-lockspace: skip the safety checks")
    p.add_argument("--type", default="he_shared", choices=("he_shared", "he_local"),
                   help="with --set/--get-shared-config: accepted for oVirt compatibility")
    return p


def _live(rec: dict, now: float, stale_after: float) -> bool:
    return now - float(rec.get("timestamp", 0)) <= stale_after


def vm_status_json(status: dict) -> dict:
    now = status["now"]
    stale = status.get("timing", {}).get("record_stale_after", 60)
    out: dict = {}
    for hid, rec in sorted(status["hosts"].items(), key=lambda kv: int(kv[0])):
        eng = rec.get("engine") or {}
        extra = (f"timestamp={int(rec['timestamp'])}\nhost-id={rec['host_id']}\nscore={int(rec['score'])}\n"
                 f"maintenance={rec['maintenance']}\nstate={rec['state']}\nstopped={rec['stopped']}\n"
                 f"config_version={rec.get('config_version', 1)}\n")
        out[str(hid)] = {
            "host-id": rec["host_id"], "host-ts": int(rec["timestamp"]), "score": int(rec["score"]),
            "engine-status": {"vm": eng.get("vm", "unknown"), "health": eng.get("health", "unknown"),
                              "detail": eng.get("detail", "unknown"), "reason": eng.get("reason", "")},
            "hostname": rec["hostname"], "maintenance": bool(rec["maintenance"]),
            "stopped": bool(rec["stopped"]), "live-data": _live(rec, now, stale), "extra": extra,
        }
    out["global_maintenance"] = bool(status["global_maintenance"])
    return out


def vm_status_text(status: dict) -> str:
    data = vm_status_json(status)
    lines = []
    if data["global_maintenance"]:
        lines += ["", "!! Cluster is in GLOBAL MAINTENANCE mode !!", ""]
    owner = status.get("owner")
    for hid, h in data.items():
        if hid == "global_maintenance":
            continue
        es = h["engine-status"]
        lines += [
            "", f"--== Host {h['hostname']} (id: {h['host-id']}) status ==--", "",
            f"{'Host ID':<34} : {h['host-id']}",
            f"{'Host timestamp':<34} : {h['host-ts']}",
            f"{'Score':<34} : {h['score']}",
            f"{'Engine status':<34} : " + json.dumps(es),
            f"{'Hostname':<34} : {h['hostname']}",
            f"{'Local maintenance':<34} : {h['maintenance']}",
            f"{'stopped':<34} : {h['stopped']}",
            f"{'State':<34} : {status['hosts'][hid]['state']}",
            f"{'Status up-to-date':<34} : {h['live-data']}",
        ] + bmc_cli.status_lines(status, hid)
    lines += bmc_cli.recordless_lines(status)
    if owner:
        lines += ["", f"Engine claim held by host {owner['hostname']} (id: {owner['host_id']})"]
    if data["global_maintenance"]:
        lines += ["", "!! Cluster is in GLOBAL MAINTENANCE mode !!", ""]
    return "\n".join(lines) + "\n"


def _engine_here(status: dict) -> bool:
    me = status["hosts"].get(str(status["host_id"]), {})
    return (me.get("engine") or {}).get("vm") == "up"


def _other_host_can_take_over(status: dict) -> bool:
    now, me = status["now"], str(status["host_id"])
    stale = status.get("timing", {}).get("record_stale_after", 60)
    return any(hid != me and _live(r, now, stale) and not r.get("maintenance") and not r.get("stopped")
               and float(r.get("score", 0)) > 0 for hid, r in status["hosts"].items())


def run(args, out=sys.stdout) -> int:
    deploy_given = [o for o, v in (("--config-append", args.config_append), ("--join", args.join),
                                   ("--generate-answer", args.generate_answer),
                                   ("--answer-file-passwords", args.answer_file_passwords)) if v]
    if deploy_given and not args.deploy:
        raise CliError(f"{deploy_given[0]} goes with --deploy", EXIT_USAGE)
    if args.deploy or args.clean_deploy or args.join_bundle:
        from . import deploy
        return deploy.main(args, out)
    if args.mode and not args.set_maintenance:
        raise CliError("--mode goes with --set-maintenance", EXIT_USAGE)
    if args.set_maintenance and not args.mode:
        raise CliError("--set-maintenance needs --mode=global|local|none", EXIT_USAGE)
    if args.json and not args.vm_status:
        raise CliError("--json goes with --vm-status", EXIT_USAGE)
    if args.force_cleanup and not args.clean_metadata:
        raise CliError("--force-cleanup goes with --clean-metadata", EXIT_USAGE)
    if args.host_id is not None and not (args.clean_metadata or args.set_bmc or args.remove_bmc):
        raise CliError("--host-id goes with --clean-metadata, --set-bmc or --remove-bmc", EXIT_USAGE)
    bmc_given = [o for o, v in (("--bmc-address", args.bmc_address), ("--bmc-user", args.bmc_user),
                                ("--bmc-password-file", args.bmc_password_file)) if v]
    if bmc_given and not args.set_bmc:
        raise CliError(f"{bmc_given[0]} goes with --set-bmc", EXIT_USAGE)
    if args.host_id is not None and args.host_id < 1:
        raise CliError("--host-id must be a positive integer", EXIT_USAGE)

    try:
        cfg = load_host_config(args.config)
    except ConfigError as e:
        raise CliError(str(e), EXIT_CONFIG) from None

    if args.check_liveliness:
        try:
            with urllib.request.urlopen(cfg.engine.health_url, timeout=10) as r:
                ok = 200 <= r.status < 300
        except (urllib.error.URLError, OSError, ValueError):
            ok = False
        print("Hosted Engine is up!" if ok else "Hosted Engine is not up!", file=out)
        return EXIT_OK if ok else EXIT_FAILED

    if args.console:
        return console(cfg)

    if args.generate_cluster_key:
        try:
            print(bmc_cli.generate_cluster_key(cfg.cluster_key_file), file=out)
        except BmcError as e:
            raise CliError(str(e)) from None
        return EXIT_OK
    record = None
    if args.set_bmc:
        try:
            record = bmc_cli.record_from_args(args, args.host_id or cfg.host_id, cfg.cluster_key_file)
        except ClusterKeyError as e:
            raise CliError(str(e), EXIT_CONFIG) from None
        except BmcError as e:
            raise CliError(str(e), EXIT_USAGE) from None
    broker = BrokerClient(cfg.broker_socket)
    try:
        if record is not None:
            broker.call("set_bmc", record=json.loads(record.to_json()))
            print(f"BMC of host {record.host_id} set: {record.label}. The HA agents can now fence that host "
                  "when it dies holding the engine.", file=out)
            return EXIT_OK
        if args.remove_bmc:
            host_id = args.host_id or cfg.host_id
            removed = broker.call("remove_bmc", host_id=host_id)["removed"]
            print(f"BMC of host {host_id} removed." if removed else f"Host {host_id} had no BMC set.", file=out)
            return EXIT_OK
        return _run_with_broker(args, broker, out)
    except BrokerError as e:
        msg = str(e)
        code = EXIT_UNREACHABLE if ("not running" in msg or "did not answer" in msg
                                    or "etcd unreachable" in msg or "cannot talk" in msg) else EXIT_FAILED
        raise CliError(msg, code) from None


def _run_with_broker(args, broker: BrokerClient, out) -> int:
    if args.vm_status:
        status = broker.call("status")
        if not status["etcd"]["ok"] and not status["etcd"].get("cluster_read_at"):
            raise CliError("etcd unreachable from this host: " + (status["etcd"].get("error") or "no lease"),
                           EXIT_UNREACHABLE)
        if args.json:
            print(json.dumps(vm_status_json(status)), file=out)
        else:
            out.write(vm_status_text(status))
        return EXIT_OK
    if args.set_maintenance:
        if args.mode == "local":
            status = broker.call("status")
            if _engine_here(status) and not _other_host_can_take_over(status):
                raise CliError("the engine VM runs on this host and no other live host can take it over; "
                               "refusing local maintenance (use --mode=global to leave the engine alone)")
        broker.call("set_maintenance", mode=args.mode)
        print({"global": "Global maintenance is on: the agents will not start, stop or move the engine VM.",
               "local": "Local maintenance is on: this host takes no part; the engine VM moves away if it runs here.",
               "none": "Maintenance cleared."}[args.mode], file=out)
        return EXIT_OK
    if args.vm_start or args.vm_shutdown or args.vm_poweroff:
        action = "vm-start" if args.vm_start else "vm-shutdown" if args.vm_shutdown else "vm-poweroff"
        status = broker.call("status")
        if action == "vm-start":
            owner = status.get("owner")
            if owner and owner["host_id"] != status["host_id"]:
                raise CliError(f"the engine VM is claimed by host {owner['hostname']} (id {owner['host_id']}); "
                               "not starting a second one")
        elif not _engine_here(status):
            raise CliError("the engine VM is not running on this host")
        broker.call("request", action=action)
        print(f"Requested {action} from this host's agent (it acts within a cycle; "
              "check with hosted-engine --vm-status).", file=out)
        return EXIT_OK
    if args.set_shared_config:
        key, value = args.set_shared_config
        version = broker.call("set_shared_config", key=key, value=value)["version"]
        print(f"{key} = {value} (shared config version {version})", file=out)
        return EXIT_OK
    if args.get_shared_config:
        value = broker.call("get_shared_config", key=args.get_shared_config)["value"]
        if value is None:
            raise CliError(f"{args.get_shared_config} is not set")
        print(f"{args.get_shared_config} : {value}", file=out)
        return EXIT_OK
    if args.reinitialize_lockspace:
        broker.call("reinitialize_lockspace", force=args.force)
        print("Lockspace reinitialized.", file=out)
        return EXIT_OK
    if args.clean_metadata:
        req = {"force": args.force_cleanup}
        if args.host_id is not None:
            req["host_id"] = args.host_id
        removed = broker.call("clean_metadata", **req)["removed"]
        print("Metadata removed." if removed else "No metadata to remove.", file=out)
        return EXIT_OK
    raise CliError("nothing to do", EXIT_USAGE)  # argparse's required group prevents this


def console(cfg) -> int:
    """`virsh console` on the engine VM, as oVirt's hosted-engine --console:
    the appliance logs root in on its serial console (whoever reaches it is
    root on this host already)."""
    import os
    import shutil
    try:
        import libvirt
    except ImportError:
        raise CliError("python3-libvirt is not installed") from None
    libvirt.registerErrorHandler(lambda *_: None, None)   # errors are ours to word, once
    vm = cfg.engine
    try:
        conn = libvirt.open(vm.libvirt_uri)
    except libvirt.libvirtError as e:
        raise CliError(f"cannot reach libvirt at {vm.libvirt_uri}: {e.get_error_message()}",
                       EXIT_UNREACHABLE) from None
    try:
        try:
            active = conn.lookupByName(vm.name).isActive()
        except libvirt.libvirtError:
            active = False
    finally:
        conn.close()
    if not active:
        raise CliError(f"the engine VM {vm.name} does not run on this host; "
                       "hosted-engine --vm-status shows where it runs")
    virsh = shutil.which("virsh")
    if virsh is None:
        raise CliError("virsh is not installed (Debian package libvirt-clients)")
    print(f"Connecting to the console of {vm.name}; leave with Ctrl-]", file=sys.stderr, flush=True)
    os.execv(virsh, [virsh, "-c", vm.libvirt_uri, "console", "--force", vm.name])
    return EXIT_FAILED   # not reached


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except CliError as e:
        print(f"hosted-engine: {e}", file=sys.stderr)
        return e.code
    except BrokenPipeError:
        return pipe_closed()
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
