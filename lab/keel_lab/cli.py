"""`keel-lab`: a real N-host Keel cluster on one machine, with fault injection."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from keel_common.pipes import pipe_closed

from .layout import DEFAULT_DIR, ENGINE_MODES, LabError

NEXT_STEPS = """Try next:
  keel-lab status                       # who runs the engine, HA state, etcd health
  keel-lab exec host1 -- hosted-engine --vm-status
  keel-lab power {engine_host} off            # pull the engine host's plug via its BMC
  keel-lab check                        # the observer's verdict: never two engines
  keel-lab down                         # remove everything
  and the web UI: the address above, in a browser on this machine (docs/webui.md)"""

DEPLOY_STEPS = """The hosts are bare (no Keel yet). Install it as a user would:
  {command}
  keel-lab status                       # hosts, their daemons and units
  keel-lab down                         # remove everything"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like argparse but shorter
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=DEFAULT_DIR,
                        help=f"the lab's state directory (default {DEFAULT_DIR}, or $KEEL_LAB_DIR)")
    common.add_argument("-v", "--verbose", action="store_true", help="log what the lab does")
    p = _Parser(prog="keel-lab", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser, metavar="COMMAND")

    up = sub.add_parser("up", parents=[common], help="create the hosts and wait for the engine VM")
    up.add_argument("--hosts", type=int, default=3, help="number of hosts (1-9, default 3)")
    up.add_argument("--profile", default="fast", choices=["fast", "production"],
                    help="HA timing profile (default fast)")
    up.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default 300)")
    up.add_argument("--no-wait", action="store_true", help="do not wait for the engine VM")
    up.add_argument("--engine", choices=ENGINE_MODES, default="installed",
                    help="installed (default): bare hosts, then Keel installed on them by "
                         "`hosted-engine --deploy` on host1 and a join on each other host; "
                         "appliance: the lab sets the hosts up itself and the engine runs inside "
                         "the engine VM; process: a "
                         "stand-in VM and the engine as a process at 198.51.100.5:8080 (quick engine "
                         "work); none: a stand-in VM and no engine; bare: hosts without Keel (sanlock, "
                         "libvirtd, the shared storage at its NFS mount point) and an answer file for "
                         "`hosted-engine --deploy`")
    up.add_argument("--no-engine-process", action="store_const", dest="engine", const="none",
                    help="the same as --engine none")

    st = sub.add_parser("status", parents=[common], help="hosts, engine and etcd at a glance")
    st.add_argument("--json", action="store_true")

    pw = sub.add_parser("power", parents=[common], help="power a host through its BMC (IPMI)")
    pw.add_argument("host")
    pw.add_argument("op", choices=["on", "off", "cycle", "status"])

    k = sub.add_parser("kill", parents=[common], help="SIGKILL one part of a host")
    k.add_argument("host")
    k.add_argument("what", choices=["broker", "agent", "sanlock", "libvirtd", "etcd", "engine-vm"])

    pa = sub.add_parser("partition", parents=[common], help="cut a host off the network or storage")
    pa.add_argument("host")
    g = pa.add_mutually_exclusive_group()
    g.add_argument("--net", action="store_true", help="cut the network (default)")
    g.add_argument("--storage", action="store_true", help="cut only the shared storage")

    bm = sub.add_parser("bmc", parents=[common], help="make a host's BMC lie or tell the truth again")
    bm.add_argument("host")
    bm.add_argument("mode", choices=["lie", "honest"],
                    help="lie: power off does nothing, power status says off; honest: the default")

    he = sub.add_parser("heal", parents=[common], help="undo partition on a host")
    he.add_argument("host")

    ex = sub.add_parser("exec", parents=[common], help="run a command inside a host")
    ex.add_argument("host")
    ex.add_argument("argv", nargs="*", metavar="-- CMD", help="the command, after --")

    ck = sub.add_parser("check", parents=[common], help="the invariant observer's verdict")
    ck.add_argument("--json", action="store_true")

    jo = sub.add_parser("journal", parents=[common],
                        help="the engine VM's journal, read from a copy of its disk (journalctl options after --)")
    jo.add_argument("argv", nargs="*", metavar="-- JOURNALCTL-OPTIONS",
                    help="e.g. -- -u keel-engine-worker -n 50 (default: the engine's units, last 200 lines)")

    sub.add_parser("down", parents=[common], help="stop and remove everything of the lab")
    return p


def print_status(d: dict) -> None:
    print(f"lab {d['dir']} (profile {d['profile']})")
    print(f"{'host':7} {'address':15} {'power':5} {'net':4} {'daemons':42} {'HA state':20} {'score':>6} engine")
    for h in d["hosts"]:
        # units an installer wrote: their short names (keel-etcd, not keel-etcd.service)
        daemons = " ".join(f"{k.removesuffix('.service')}{'' if v else '(dead)'}"
                           for k, v in h["daemons"].items()) or "-"
        score = "" if h["score"] is None else f"{h['score']:g}"
        print(f"{h['name']:7} {h['address']:15} {h['power']:5} {h['network']:4} {daemons:42} "
              f"{str(h['ha_state'] or '-'):20} {score:>6} {'RUNNING' if h['engine_running'] else '-'}")
    e = d["engine"]
    where = ", ".join(e["running_on"]) or "nowhere"
    print(f"engine VM: running on {where}; health {e['health_url']} "
          f"{'OK' if e.get('health_ok') else 'not answering'}")
    if e.get("api_url"):
        where = (f"password in {e['admin_password_file']}" if e.get("admin_password_file")
                 else f"password {e.get('admin_password')}")
        inside = {"appliance": " (inside the engine VM)",
                  "installed": " (inside the engine VM)",
                  "bare": " (inside the engine VM, once deployed)"}.get(e.get("engine_mode"), "")
        print(f"engine API{inside}: {e['api_url']} (user {e.get('admin_user')}, {where})")
        print(f"web UI: {e['api_url'].removesuffix('/ovirt-engine/api')}/ui/ (a browser on this machine; "
              "the same user)")
    if d.get("deploy"):
        print(f"bare hosts: storage mounted at {d['deploy']['storage_mount']} "
              f"inside every host; answers for the installer in {d['deploy']['answers']}")
    if not d["etcd"]["endpoints"]:
        print("etcd: none yet (the installer sets it up)")
    else:
        members = " ".join(f"{m['member']}={'healthy' if m['healthy'] else 'UNHEALTHY'}"
                           for m in d["etcd"]["members"])
        print(f"etcd: {', '.join(d['etcd']['endpoints'])}  [{members}]")
    for h in d["hosts"]:
        b = h["bmc"]
        print(f"BMC {h['name']}: {b['address']}:{b['port']} user {b['username']} "
              f"password {b['password']} (ipmitool -I lanplus -C 3)")


def run(args: argparse.Namespace) -> int:
    from .lab import Lab
    lab = Lab(args.dir)
    if args.cmd == "up":
        d = lab.up(args.hosts, args.profile, wait=not args.no_wait, timeout=args.timeout,
                   engine=args.engine)
        print_status(d)
        if d["engine"].get("engine_mode") == "bare":
            print(DEPLOY_STEPS.format(command=d["deploy"]["command"]))
        else:
            print(NEXT_STEPS.format(engine_host=d["engine"]["host"] or "host1"))
    elif args.cmd == "status":
        d = lab.describe()
        print(json.dumps(d, indent=2, sort_keys=True)) if args.json else print_status(d)
    elif args.cmd == "power":
        state = lab.power(args.host, args.op)
        print(f"{args.host}: power {state}")
    elif args.cmd == "kill":
        pid = lab.kill(args.host, args.what)
        print(f"{args.host}: killed {args.what} (pid {pid})")
    elif args.cmd == "partition":
        lab.partition(args.host, storage=args.storage)
        print(f"{args.host}: {'storage' if args.storage else 'network'} cut")
    elif args.cmd == "heal":
        lab.heal(args.host)
        print(f"{args.host}: healed")
    elif args.cmd == "bmc":
        lab.bmc_lies(args.host, args.mode == "lie")
        print(f"{args.host}: BMC {'lies (reports off, powers nothing off)' if args.mode == 'lie' else 'honest'}")
    elif args.cmd == "exec":
        return lab.exec(args.host, args.argv)
    elif args.cmd == "check":
        from .observer import read_events, verdict
        lab.layout()
        v = verdict(read_events(lab.dir))
        if args.json:
            print(json.dumps(v, indent=2, sort_keys=True))
        else:
            print(f"engine starts {v['engine_starts']}, stops {v['engine_stops']}, "
                  f"running now on {', '.join(v['running_now']) or 'no host'}")
            for o in v["multiple_engines"]:
                print(f"VIOLATION: engine on {', '.join(o['hosts'])} at once "
                      f"from {o['from']:.3f} for {o.get('seconds', 'ongoing')} s")
            for u in v["starts_without_lease"]:
                print(f"VIOLATION: engine started on {u['host']} at {u['t']:.3f} without the lease")
            print("OK: never two engines, every start held the lease" if v["ok"] else "FAILED")
        return 0 if v["ok"] else 1
    elif args.cmd == "journal":
        from . import appliance, guestlog
        opts = args.argv or ["-u", "keel-engine", "-u", "keel-engine-worker", "-u", "keel-appliance-firstboot",
                             "-n", "200"]
        print(guestlog.journal(lab.layout(), appliance.DISK, opts), end="")
    elif args.cmd == "down":
        for line in lab.down():
            print(line)
        print("lab down")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if ("exec" in argv or "journal" in argv) and "--" in argv:
        # Everything after -- belongs to the command, options included.
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    args = build_parser().parse_args(argv)
    if args.cmd in ("exec", "journal"):
        args.argv = list(args.argv) + command
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
    try:
        return run(args)
    except LabError as e:
        print(f"keel-lab: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("keel-lab: interrupted (the lab keeps its state; `keel-lab down` cleans up)",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        return pipe_closed()
    except (OSError, ValueError) as e:
        print(f"keel-lab: {e.__class__.__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
