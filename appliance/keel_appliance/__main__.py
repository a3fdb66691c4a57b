"""`python -m keel_appliance` (also `keel-engine-appliance`): build the engine
appliance image, write a seed disk, or boot the image on this machine."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

PROG = "keel-engine-appliance"


def _error(msg: str, status: int = 1) -> int:
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    return status


def cmd_build(args) -> int:
    from .build import build, describe
    image = build(cache=args.cache, force=args.force, source=args.source, disk_gib=args.disk_gib,
                  compress=not args.no_compress)
    if args.json:
        print(json.dumps(describe(image), indent=2))
    else:
        print(f"disk     {image.disk} ({image.disk_format})\nkernel   {image.kernel}\n"
              f"initrd   {image.initrd}\ncmdline  {image.cmdline}\n"
              f"size     {image.size_bytes / 1e6:.0f} MB stored\nkey      {image.key}")
    return 0


def cmd_seed(args) -> int:
    from .seed import DhcpNetwork, NfsMount, SeedConfig, StaticNetwork, parse_engine_conf_text, write_seed
    if not args.admin_password_file:
        return _error("--admin-password-file is required (the password never goes on the command line)", 2)
    try:
        with open(args.admin_password_file) as f:
            password = f.read().rstrip("\r\n")
    except OSError as e:
        return _error(f"cannot read --admin-password-file {args.admin_password_file}: {e.strerror}", 2)
    conf = {}
    if args.engine_conf:
        try:
            with open(args.engine_conf) as f:
                conf = parse_engine_conf_text(f.read())
        except OSError as e:
            return _error(f"cannot read --engine-conf {args.engine_conf}: {e.strerror}", 2)
    for item in args.set or []:
        name, sep, value = item.partition("=")
        section, dot, key = name.partition(".")
        if not sep or not dot or not section or not key:
            return _error(f"--set expects SECTION.KEY=VALUE, got {item!r}", 2)
        conf.setdefault(section, {})[key] = value
    dns = tuple(args.dns or ())
    if args.address:
        network = StaticNetwork(address=args.address, gateway=args.gateway, dns=dns, mac=args.mac)
    else:
        if args.gateway:
            return _error("--gateway needs --address (without --address the appliance uses DHCP)", 2)
        network = DhcpNetwork(dns=dns, mac=args.mac)
    if bool(args.nfs) != bool(args.mount_point):
        return _error("--nfs and --mount-point go together", 2)
    storage = NfsMount(export=args.nfs, mount_point=args.mount_point) if args.nfs else None
    cfg = write_seed(args.output, SeedConfig(hostname=args.hostname, admin_password=password,
                                             network=network, database=args.database,
                                             engine_conf=conf, instance_id=args.instance_id or "",
                                             storage=storage))
    print(f"seed {args.output}: instance {cfg.instance_id}, hostname {cfg.hostname}, "
          f"{'static ' + cfg.network.address if isinstance(cfg.network, StaticNetwork) else 'DHCP'}, "
          f"database {cfg.database}")
    return 0


def cmd_run(args) -> int:
    from .build import ApplianceImage, default_cache
    from .vm import ApplianceVM, UserNet
    cache = args.cache or default_cache()
    directory = os.path.join(cache, "current")
    if not os.path.exists(os.path.join(directory, "manifest.json")):
        return _error(f"no image in {cache}: run `{PROG} build` first")
    image = ApplianceImage.load(os.path.realpath(directory))
    vm = ApplianceVM(image, args.disk, seed=args.seed, memory_mb=args.memory, vcpus=args.vcpus,
                     net=UserNet(host_address=args.forward_address, host_port=args.forward_port))
    return vm.run_interactive()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description="The Keel engine appliance image")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build the image (cached: rebuilt only when its inputs change)")
    b.add_argument("--cache", help="cache directory (default $KEEL_APPLIANCE_CACHE or /var/cache/keel-appliance)")
    b.add_argument("--force", action="store_true", help="rebuild both layers even if cached")
    b.add_argument("--source", help="the Keel source tree (default: the one this command runs from)")
    b.add_argument("--disk-gib", type=int, default=6, help="virtual size of the disk (default 6)")
    b.add_argument("--no-compress", action="store_true", help="an uncompressed qcow2")
    b.add_argument("--json", action="store_true")
    s = sub.add_parser("seed", help="write a seed disk (vfat, label CIDATA) for the engine VM")
    s.add_argument("output", help="the seed image file to write (mode 0600)")
    s.add_argument("--hostname", required=True)
    s.add_argument("--admin-password-file", help="file holding admin@internal's password")
    s.add_argument("--address", help="static ADDRESS/PREFIX (default: DHCP)")
    s.add_argument("--gateway")
    s.add_argument("--dns", action="append", help="a DNS server (repeatable)")
    s.add_argument("--mac", help="the NIC to configure (default: the first Ethernet NIC)")
    s.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    s.add_argument("--engine-conf", help="engine.conf overrides (INI file)")
    s.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="one engine.conf override")
    s.add_argument("--nfs", metavar="SERVER:/EXPORT", help="the storage domain the engine mounts")
    s.add_argument("--mount-point", help="where (the path the hosts use for that storage domain)")
    s.add_argument("--instance-id", help="default: a new random id (a new id re-applies the seed)")
    r = sub.add_parser("run", help="boot the built image here under qemu, console on this terminal")
    r.add_argument("disk", help="the VM's disk: created as a qcow2 overlay on the image if missing")
    r.add_argument("--seed", help="seed disk image (needed on the first boot)")
    r.add_argument("--cache")
    r.add_argument("--memory", type=int, default=1024, help="MiB (default 1024)")
    r.add_argument("--vcpus", type=int, default=2)
    r.add_argument("--forward-address", default="127.0.0.1", help="host address for the API forward")
    r.add_argument("--forward-port", type=int, default=8080, help="host port forwarded to the guest's 80")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from .pyenv import BuildError
    from .seed import SeedError
    try:
        return {"build": cmd_build, "seed": cmd_seed, "run": cmd_run}[args.command](args)
    except (BuildError, SeedError) as e:
        return _error(str(e))
    except OSError as e:
        return _error(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
