"""The engine VM's libvirt domain XML, built from the host configuration.

The `<lease>` element makes libvirt's sanlock lock driver acquire the
engine lease for the qemu process itself: the lease lives exactly as long
as the VM, and a second host's start is refused by sanlock."""
from __future__ import annotations

from keel_common.config import HostConfig
from keel_common.domainxml import Disk, Domain, Lease, Nic, domain_xml


def engine_domain_xml(cfg: HostConfig) -> str:
    vm, st = cfg.engine, cfg.storage
    return domain_xml(Domain(
        name=vm.name, uuid=vm.uuid, memory_bytes=vm.memory_mb * 2 ** 20, vcpus=vm.vcpus, type=vm.domain_type,
        kernel=vm.kernel, initrd=vm.initrd, cmdline=vm.cmdline, emulator=vm.emulator,
        disks=(Disk(path=vm.disk_path, format=vm.disk_format, cache="none"),
               *((Disk(path=vm.seed_path, format="raw", readonly=True),) if vm.seed_path else ())),
        nics=(Nic(mac=vm.mac, bridge=vm.bridge),),
        lease=Lease(st.lockspace, st.lease_name, st.lease_path, 0),
        # the agent decides restarts, never libvirt
        on_poweroff="destroy", on_reboot="destroy", on_crash="destroy",
        serial_log=vm.console_log, rng=vm.rng))
