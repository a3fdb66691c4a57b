"""What the nemesis checks through the engine itself, when the lab's engine
runs inside the engine VM (`keel-lab up --engine appliance`):

- a writer creates a VM record through the API every 2 s, all run long;
  an answer 201 is an acknowledgement, and every acknowledged VM must still
  be there at the end (whatever failed over in between);
- a highly available VM (with its own sanlock lease) runs all along, and
  a witness samples every host's processes for its qemu: two hosts running
  it at once, outside a migration the nemesis asked for, is counted;
- administrator actions through the API: migrate that VM, stop and start it.

Figures, not a test; used by bench/nemesis.py.
"""
from __future__ import annotations

import threading
import time
import urllib.parse

from keel_lab import probe
from keel_installer.engine_api import EngineApiError
from keel_lab.appliance import Api
from keel_lab.lab import Lab
from keel_lab.layout import LabError

HA_VM = "nemesis-ha"
ADMIN_KINDS = ("ha-vm-migrate", "ha-vm-restart")


def engine_api(lab: Lab) -> Api | None:
    """The admin's API client when the lab's engine is the appliance, else None."""
    info = lab.describe(detail=False).get("engine") or {}
    if info.get("engine_mode") != "appliance" or not info.get("admin_password"):
        return None
    return Api(info["admin_user"], info["admin_password"], timeout=10.0)


def _fresh(api: Api) -> Api:
    return Api(api.user, api.password, timeout=api.timeout)


class Writer(threading.Thread):
    def __init__(self, api: Api, prefix: str, period: float = 2.0):
        super().__init__(daemon=True, name="nemesis-writer")
        self.api, self.prefix, self.period = api, prefix, period
        self.acked: list[str] = []
        self.refused = 0
        self.stop = threading.Event()

    def run(self) -> None:
        api, n = _fresh(self.api), 0
        while not self.stop.is_set():
            n += 1
            try:
                vm = api.call("POST", "/vms", {"name": f"{self.prefix}-{n}", "cluster": {"name": "Default"},
                                               "template": {"name": "Blank"}, "memory": 64 * 2 ** 20})
                self.acked.append(vm["id"])
            except Exception:    # noqa: BLE001 - the engine is away: not acknowledged
                self.refused += 1
                api = _fresh(self.api)    # a new engine instance wants a new sign-in
            self.stop.wait(self.period)

    def lost(self, api: Api) -> list[str]:
        q = urllib.parse.quote(f"name={self.prefix}-*")
        patient = Api(api.user, api.password, timeout=120.0)    # thousands of VMs under TCG
        there = {v["id"] for v in patient.call("GET", f"/vms?search={q}").get("vm", [])}
        return [i for i in self.acked if i not in there]


class HaVmWitness(threading.Thread):
    """Samples /proc every 0.5 s for the HA VM's qemu on each host."""

    def __init__(self, lab: Lab, name: str = HA_VM):
        super().__init__(daemon=True, name="nemesis-ha-witness")
        self.layout, self.marker = lab.layout(), f"guest={name},"
        self.migrating = threading.Event()
        self.doubles: list[dict] = []    # {"from", "to", "hosts"}
        self.stop = threading.Event()

    def run(self) -> None:
        current = None
        while not self.stop.is_set():
            hosts = sorted(probe.qemu_pids(self.layout, self.marker))
            now = time.time()
            if len(hosts) > 1 and not self.migrating.is_set():
                if current is None:
                    current = {"from": now, "to": now, "hosts": hosts}
                    self.doubles.append(current)
                current["to"] = now
            else:
                current = None
            self.stop.wait(0.5)


def wait_api(api: Api, pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = pred(api)
            if value:
                return value
        except Exception:   # noqa: BLE001 - not answering yet
            api = _fresh(api)
        time.sleep(1)
    raise LabError(f"{what}: not within {timeout:.0f} s")


def _vm(api: Api, vm_id: str) -> dict:
    return api.call("GET", f"/vms/{vm_id}")


def ensure_ha_vm(api: Api, witness: HaVmWitness) -> str:
    """The HA VM, made once and started; its id once it is up."""
    found = api.find("vms", HA_VM)
    vm_id = found["id"] if found else api.call("POST", "/vms", {
        "name": HA_VM, "cluster": {"name": "Default"}, "template": {"name": "Blank"}, "memory": 64 * 2 ** 20,
        "high_availability": {"enabled": True, "priority": 50}})["id"]
    return ha_vm_up(api, vm_id, witness, start_after=0)


def ha_vm_up(api: Api, vm_id: str, witness: HaVmWitness, timeout: float = 400,
             start_after: float = 150) -> str:
    """Wait until the engine has the HA VM up, and its qemu runs on the host
    the engine names and only there (right after the engine's own restart
    its record may still name the host that died): it restarts the VM itself
    after a fence or its lease's expiry (74 s at most in the lab). Down
    longer than `start_after` (e.g. stopped by an administrator): start it."""
    deadline = time.monotonic() + timeout
    down_since = None
    while time.monotonic() < deadline:
        try:
            vm = _vm(api, vm_id)
            status = vm["status"]
            running = set(probe.qemu_pids(witness.layout, witness.marker))
            if status == "up" and running == {_host_name(api, vm)}:
                return vm_id
            if status != "down":
                down_since = None
            elif down_since is None:
                down_since = time.monotonic()
            elif time.monotonic() - down_since > start_after:
                api.call("POST", f"/vms/{vm_id}/start", {"async": True})
                down_since = None
        except Exception:   # noqa: BLE001 - the engine is away or the VM busy: look again
            api = _fresh(api)
        time.sleep(2)
    raise LabError(f"the HA VM {HA_VM} is not up within {timeout:.0f} s")


def _host_name(api: Api, vm: dict) -> str | None:
    hid = (vm.get("host") or {}).get("id")
    return None if hid is None else api.call("GET", f"/hosts/{hid}").get("name")


def admin_action(api: Api, kind: str, vm_id: str, witness: HaVmWitness) -> tuple[str, str | None]:
    """Run one administrator action on the HA VM: (the host it ended on, and
    why the engine refused it or did not answer in time, else None). A
    migration whose answer was lost may still run: the witness counts no
    double until the VM has settled on one host again."""
    if kind not in ADMIN_KINDS:
        raise ValueError(kind)
    why = None
    if kind == "ha-vm-migrate":
        witness.migrating.set()
    try:
        try:
            _migrate(api, vm_id) if kind == "ha-vm-migrate" else _restart(api, vm_id)
        except (EngineApiError, LabError) as e:
            why = str(e)
        ha_vm_up(api, vm_id, witness, start_after=0)
        # the source's qemu ends a moment after the destination runs
        wait_until(lambda: len(probe.qemu_pids(witness.layout, witness.marker)) <= 1, 30)
    finally:
        witness.migrating.clear()
    host = wait_api(api, lambda a: _host_name(a, _vm(a, vm_id)), 60, "the HA VM's host")
    return host, why


def _migrate(api: Api, vm_id: str) -> None:
    before = _vm(api, vm_id).get("host", {}).get("id")
    # async, as oVirt's clients do: a migration under TCG outlasts the client's
    # 10 s timeout, and the wait below is the one that counts
    api.call("POST", f"/vms/{vm_id}/migrate", {"async": True})
    wait_api(api, lambda a: (lambda v: v["status"] == "up" and v.get("host", {}).get("id") not in
                             (None, before))(_vm(a, vm_id)), 180, "the migration")


def _restart(api: Api, vm_id: str) -> None:
    api.call("POST", f"/vms/{vm_id}/stop", {"async": True})
    wait_api(api, lambda a: _vm(a, vm_id)["status"] == "down", 120, "the HA VM down")
    api.call("POST", f"/vms/{vm_id}/start", {"async": True})


def wait_until(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.5)
    return False
