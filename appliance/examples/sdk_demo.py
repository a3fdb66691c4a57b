#!/usr/bin/env python3
"""Drive Keel with the unmodified oVirt Python SDK: connect, create a VM
from a template, start it on a host, live-migrate it, stop it, remove it.

    python3 sdk_demo.py --url http://198.51.100.5:8080/ovirt-engine/api \
        --user admin@internal --password-file pw.txt [--template Blank] [--keep]
"""
import argparse
import sys
import time

import ovirtsdk4 as sdk
import ovirtsdk4.types as types

MiB = 2 ** 20


def wait(what, predicate, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(1)
    raise SystemExit(f"sdk_demo: timed out waiting for {what}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--user", default="admin@internal")
    p.add_argument("--password-file", required=True)
    p.add_argument("--template", default="Blank")
    p.add_argument("--cluster", default="Default")
    p.add_argument("--name", default="demo-vm")
    p.add_argument("--keep", action="store_true", help="leave the VM running at the end")
    args = p.parse_args()
    with open(args.password_file) as f:
        password = f.read().strip()

    conn = sdk.Connection(url=args.url, username=args.user, password=password)
    try:
        system = conn.system_service()
        print("connected to", system.get().product_info.name)
        hosts = [h for h in system.hosts_service().list(search=f"cluster={args.cluster} and status=up")]
        if len(hosts) < 2:
            raise SystemExit(f"sdk_demo: need two 'up' hosts in cluster {args.cluster}, found {len(hosts)}")
        vms = system.vms_service()
        for old in vms.list(search=f"name={args.name}"):
            print("removing a leftover", old.name)
            svc = vms.vm_service(old.id)
            if old.status != types.VmStatus.DOWN:
                svc.stop()
            svc.remove()
        vm = vms.add(types.Vm(name=args.name, cluster=types.Cluster(name=args.cluster),
                              template=types.Template(name=args.template), memory=128 * MiB))
        print(f"created VM {vm.name} ({vm.id}) from template {args.template}")
        svc = vms.vm_service(vm.id)
        svc.start(vm=types.Vm(placement_policy=types.VmPlacementPolicy(hosts=[types.Host(id=hosts[0].id)])))
        wait("VM up", lambda: svc.get().status == types.VmStatus.UP)
        print("started on host", system.hosts_service().host_service(svc.get().host.id).get().name)
        t0 = time.monotonic()
        svc.migrate(host=types.Host(id=hosts[1].id))
        wait("migration", lambda: svc.get().host.id == hosts[1].id and svc.get().status == types.VmStatus.UP)
        print(f"migrated to host {hosts[1].name} in {time.monotonic() - t0:.1f} s")
        if args.keep:
            return 0
        svc.stop()
        wait("VM down", lambda: svc.get().status == types.VmStatus.DOWN)
        print("stopped")
        svc.remove()
        print("removed")
        for e in system.events_service().list(max=6):
            print(f"  event {e.id}: {e.description}")
    except sdk.Error as e:
        print(f"sdk_demo: error: {e}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
