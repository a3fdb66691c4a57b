"""What running VMs' guest agents report, asked by the engine worker's
monitor (`refresh`, once a cycle) and kept in the VMs' guest_* columns
(services/guest_info.py says what they hold).

The asking never holds up the monitor's cycle: each host's VMs are asked in
a thread of their own, each VM under a hard deadline and in parallel (a
silent agent costs its own VM's answer, nobody else's), and the answers are
stored at the next cycle. A host is asked again only once its last round is
over, so a host that hangs never collects threads.

How often: a VM whose agent has not answered (its guest is booting, or has
no agent) is looked at every SILENT_EVERY seconds, so a guest's name and
addresses show within seconds of its agent starting (scripts wait for a new
VM's address before going on). The look is the agent channel's state in the
domain's XML: an agent that is not connected costs libvirt nothing and
writes nothing to its log. An agent that answers is asked again every
ANSWERING_EVERY seconds: what it reports (name, OS, addresses) seldom
changes, and each ask runs four agent commands in the guest.

A report stays until the VM is down (models.py clears it then, whatever
brought it down); an agent that stops answering leaves its last report,
with the time it was made. The log says once when a VM's agent first
answers and once when it stops."""
from __future__ import annotations

import logging
import threading
import time

import libvirt
from sqlalchemy import select, update

from .. import virt
from ..models import Host, Vm, utcnow
from ..services import guest_info

log = logging.getLogger("keel.engine.guest")
SILENT_EVERY = 10.0
ANSWERING_EVERY = 60.0
# hosts whose VMs are asked: those the monitor polls and finds answering
HOSTS = ("up", "preparing_for_maintenance")
INFO_TYPES = (libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME | libvirt.VIR_DOMAIN_GUEST_INFO_OS
              | libvirt.VIR_DOMAIN_GUEST_INFO_TIMEZONE)


class NotConnected(Exception):
    """The guest has not opened the agent's channel (no agent runs, or not yet)."""


def agent_report(conn, vm_id) -> guest_info.GuestReport:
    """One VM's report through its host's libvirt; raises NotConnected or libvirt's error."""
    dom = conn.lookupByUUIDString(vm_id)
    if guest_info.agent_connected(dom.XMLDesc(0)) is False:
        raise NotConnected("the guest agent is not connected")
    try:
        params = dom.guestInfo(INFO_TYPES | libvirt.VIR_DOMAIN_GUEST_INFO_INTERFACES, 0)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
            raise
        # the host's libvirt predates interfaces in guest info (8.4): ask for them apart
        params = dom.guestInfo(INFO_TYPES, 0)
        return guest_info.report(params, dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0))
    return guest_info.report(params)


def ask_host(uri, vm_ids, timeout) -> dict:
    """{vm id: GuestReport or the exception that stands for no answer}: one
    connection to the host, the VMs asked in parallel, each within `timeout`."""
    try:
        conn = virt.connect(uri, timeout)
    except Exception as e:   # the host did not answer: neither did its VMs' agents
        return {vm_id: e for vm_id in vm_ids}
    results = {}

    def one(vm_id):
        try:
            results[vm_id] = virt.with_deadline(lambda: agent_report(conn, vm_id), timeout, "guest agent")
        except Exception as e:   # handed to the caller as this VM's answer
            results[vm_id] = e
    threads = [threading.Thread(target=one, args=(vm_id,), daemon=True, name="guest-agent") for vm_id in vm_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 2)
    try:
        virt.with_deadline(conn.close, timeout, f"close {uri}")
    except Exception:   # the connection goes with its last reference anyway
        pass
    return {vm_id: results.get(vm_id, virt.VirtError("no answer")) for vm_id in vm_ids}


def _start_thread(fn):
    threading.Thread(target=fn, daemon=True, name="guest-agents").start()


def _gone(err) -> bool:
    """The VM is not on that host (any more), or not running there: nothing
    to say about its agent."""
    return virt.is_error(err, libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID)


class _Round:
    """One host's VMs being asked; `results` is set when it is over."""

    def __init__(self, host_id, names):
        self.host_id, self.names = host_id, names
        self.results = None


class GuestAgents:
    def __init__(self, ctx, ask=ask_host, start=_start_thread, clock=time.monotonic):
        self.sessionmaker = ctx.sessionmaker
        self.config = ctx.config
        self.ask, self.start, self.clock = ask, start, clock
        self.silent_every, self.answering_every = SILENT_EVERY, ANSWERING_EVERY
        self.rounds: dict[str, _Round] = {}     # host id -> its round in progress
        self.asked: dict[str, float] = {}       # vm id -> when its agent was last asked
        self.answering: dict[str, bool] = {}    # vm id -> whether its agent answered last (what the log said)

    def refresh(self) -> None:
        """Store the answers of finished rounds, start those due. Never raises:
        the monitor's cycle goes on whatever happens here."""
        try:
            self._store()
            self._start_due()
        except Exception:   # the database was away: the next cycle tries again
            log.exception("asking the guest agents failed")

    def _store(self) -> None:
        done = [r for r in self.rounds.values() if r.results is not None]
        if not done:
            return
        answers = []
        with self.sessionmaker() as s:
            for rnd in done:
                del self.rounds[rnd.host_id]
                for vm_id, got in rnd.results.items():
                    if isinstance(got, guest_info.GuestReport):
                        # Not a change of the VM (its version stays): an API worker's write
                        # based on an earlier read stays valid. Only a VM still up on the
                        # host that answered takes it; one stopped meanwhile stays clear.
                        res = s.execute(update(Vm).where(Vm.id == vm_id, Vm.status == "up",
                                                         Vm.host_id == rnd.host_id)
                                        .values(guest_fqdn=got.fqdn, guest_os=got.os, guest_interfaces=got.interfaces,
                                                guest_reported_at=utcnow())
                                        .execution_options(synchronize_session=False))
                        if res.rowcount:
                            answers.append((vm_id, rnd.names[vm_id], got))
                    elif not _gone(got):
                        self._silent(vm_id, rnd.names[vm_id], got)
            s.commit()
        for vm_id, name, got in answers:
            if self.answering.get(vm_id) is not True:
                os_name = (got.os or {}).get("pretty_name") or (got.os or {}).get("name") or "an unnamed OS"
                log.info("VM %s: its guest agent answers (host name %s, %s, %d network interfaces)",
                         name, got.fqdn or "not given", os_name, len(got.interfaces))
            self.answering[vm_id] = True

    def _silent(self, vm_id, name, err) -> None:
        if self.answering.get(vm_id) is True:
            log.warning("VM %s: its guest agent stopped answering (%s); its last report stays until the VM "
                        "is down, and the agent is asked again every %.0f s", name,
                        str(err) or type(err).__name__, self.silent_every)
        self.answering[vm_id] = False

    def _start_due(self) -> None:
        with self.sessionmaker() as s:
            rows = s.execute(select(Vm.id, Vm.name, Vm.host_id, Vm.guest_reported_at, Host.libvirt_uri)
                             .join(Host, Host.id == Vm.host_id)
                             .where(Vm.status == "up", Host.status.in_(HOSTS))).all()
        up = {r.id for r in rows}
        for gone in [v for v in {*self.asked, *self.answering} if v not in up]:
            # down or elsewhere: its own events say so; a new run starts unasked
            self.asked.pop(gone, None)
            self.answering.pop(gone, None)
        now = self.clock()
        due: dict[str, tuple[str, dict]] = {}
        for r in rows:
            if r.host_id in self.rounds:
                continue
            if r.id not in self.answering and r.guest_reported_at is not None:
                self.answering[r.id] = True   # answered before this worker started: no second "answers"
            every = self.answering_every if self.answering.get(r.id) else self.silent_every
            if now - self.asked.get(r.id, float("-inf")) >= every:
                self.asked[r.id] = now
                due.setdefault(r.host_id, (r.libvirt_uri, {}))[1][r.id] = r.name
        for host_id, (uri, names) in due.items():
            rnd = self.rounds[host_id] = _Round(host_id, names)
            timeout = self.config.libvirt_timeout

            def run(rnd=rnd, uri=uri, ids=list(names)):
                try:
                    rnd.results = self.ask(uri, ids, timeout)
                except Exception as e:   # never leave a round open: the host would not be asked again
                    rnd.results = {vm_id: e for vm_id in ids}
            self.start(run)
