"""Host failure handling in the engine worker: fence, mark down, restart HA VMs.

A pass over a failed host reads the database, asks ``policy.decide`` what
may happen, and does it, writing an event for every step (who, what, why).
What decides is data: a confirmed fence is a `fences` row that the host's
`fence_id` points at; an HA VM waiting for its restart carries the failed
host in `ha_restart_host_id`. Messages are for people only, so an engine
restart resumes safely and rewording a message changes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from keel_common import ipmi

from ..errors import Fault
from ..models import Event, Fence, FenceAgent, Host, Vm, utcnow
from ..services import events, hosts as host_svc, vms as vm_svc
from ..timeutil import aware
from . import policy
from .agents import AgentConfigError, spec_from_record
from .fencing import fence_through_agents
from .settings import PowerSettings

log = logging.getLogger("keel.engine.power")
MiB = 2 ** 20
# event codes (oVirt's numbers where they exist: VDS_FENCE_*, HA_VM_*)
EV_FENCE_SKIPPED, EV_FENCE_START, EV_FENCE_OK, EV_FENCE_FAILED = 9010, 9011, 9012, 9013
EV_FENCE_AGENT, EV_HOST_DOWN, EV_MANUAL_FENCE, EV_WAIT = 9014, 9015, 9016, 9017
EV_HA_RESTART, EV_HA_RESTART_FAILED, EV_HA_HELD, EV_STALE_VM = 9020, 9021, 9022, 9023
EV_POWER_ON, EV_AGENT_TEST = 9018, 9019
EV_LEASES_RELEASED, EV_LEASE_WAIT, EV_HA_DOWN = 9025, 9026, 9027
EV_AGENT_FENCE = 9028
AUTO = "the engine (host monitor)"


def confirmed_fence(s, host) -> Fence | None:
    """The confirmed fence that holds the host down, if any."""
    if host.status != "down" or not host.fence_id:
        return None
    fence = s.get(Fence, host.fence_id)
    return fence if fence is not None and fence.state == "confirmed" else None


def last_fence(s, host) -> Fence | None:
    return s.scalars(select(Fence).where(Fence.host_id == host.id).order_by(Fence.started.desc())
                     .limit(1)).first()


class Failover:
    """Failure handling for the engine worker; thread-safe per host."""

    def __init__(self, ctx, settings: PowerSettings | None = None, storage_probe=None,
                 lease_probe=None, release_leases=None, agent_fences=None, run=ipmi.run_operation,
                 sleep=time.sleep):
        self.ctx = ctx
        self.settings = settings or PowerSettings()
        self.cfg = policy.PolicyConfig(grace_period=self.settings.grace_period,
                                       max_unresponsive_share=self.settings.max_unresponsive_share,
                                       fencing_enabled=self.settings.fencing_enabled)
        # storage_probe(host, since) -> True/False/None: did the host renew its storage
        # lease after ``since`` (wall clock, when we saw it stop answering)?
        self.watch_storage = storage_probe is not None
        self.storage_probe = storage_probe or (lambda host, since: None)
        # lease_probe(vm, host) -> bool | None: is the VM's own sanlock lease free
        # (released, or its owner's host-id lease expired)? None: it has no lease
        self.lease_probe = lease_probe or (lambda vm, host: None)
        # release_leases(host) -> host id | None: free a host's sanlock leases on its
        # behalf; called only after its BMC confirmed it is off
        self.release_leases = release_leases
        # agent_fences(session) -> {host id: FenceRecord}: the fences the HA agents
        # made of the engine's own host (from the hosts' etcd; the session is the
        # caller's, to read the hosts through); None: not known here
        self.agent_fences = agent_fences
        self._agent_fences_error: str | None = None
        self.run, self.sleep = run, sleep
        self._stopping = threading.Event()
        self._locks: dict[str, threading.Lock] = {}
        self._watchers: dict[str, threading.Thread] = {}
        self._unresponsive_at: dict[str, float] = {}
        self._told: dict[str, set] = {}     # events already written this episode (messages only)
        self._guard = threading.Lock()

    # ---- helpers ------------------------------------------------------
    def lock(self, host_id):
        """One pass at a time per host (fences and restarts of one host never overlap)."""
        with self._guard:
            return self._locks.setdefault(host_id, threading.Lock())

    def new_episode(self, host_id):
        """The host failed again: the events of this episode are new ones."""
        self._told.pop(host_id, None)

    def _event(self, s, code, text, severity="normal", once_key=None, **refs):
        if once_key is not None:
            told = self._told.setdefault(refs.get("host_id", ""), set())
            if once_key in told:
                return
            told.add(once_key)
        events.add(s, code, text, severity=severity, **refs)

    def event_now(self, code, text, severity="normal", **refs):
        """An event in a short transaction of its own: written while the caller
        waits on a BMC, when the caller's own transaction must not stay open."""
        with self.ctx.sessionmaker() as s:
            events.add(s, code, text, severity=severity, **refs)
            s.commit()

    def _agents(self, s, host):
        specs = []
        for rec in host_svc.fence_agents_for_host(s, host.id, self.ctx.config):
            try:
                specs.append(spec_from_record(rec))
            except AgentConfigError as exc:
                self._event(s, EV_FENCE_AGENT, f"Fence agent {rec.get('address')} of host {host.name} "
                            f"is unusable and skipped: {exc}", "error",
                            once_key=("agentcfg", rec.get("id")), host_id=host.id)
        return specs

    def _ha_vms(self, s, host):
        q = select(Vm).where(Vm.high_availability.is_(True),
                             (Vm.host_id == host.id) | ((Vm.status == "down") & (Vm.ha_restart_host_id == host.id)))
        return list(s.scalars(q))

    def _view(self, s, host, agents_known=None):
        since = None
        if host.status == "non_responsive" and host.last_seen is not None:
            since = aware(host.last_seen).timestamp()
        renews = None
        if host.status == "non_responsive":
            renews = self.storage_probe(host, self._unresponsive_at.setdefault(host.id, time.time()))
        else:
            self._unresponsive_at.pop(host.id, None)
        grace = None
        powered_on = self._last_power_on(s, host) if host.status == "non_responsive" else None
        if powered_on is not None and time.time() - powered_on < self.settings.boot_grace:
            # it was powered on by us a moment ago and is still booting
            since, grace = max(since or 0.0, powered_on), self.settings.boot_grace
        return policy.HostView(id=host.id, name=host.name, status=host.status,
                               cluster_id=host.cluster_id,
                               free_memory_mb=(host.memory_free or 0) // MiB,
                               unresponsive_since=since, renews_storage_lease=renews,
                               has_fence_agents=bool(agents_known), grace_period=grace,
                               liveness_pending=(self.watch_storage and host.status == "non_responsive"
                                                 and renews is None))

    def _last_power_on(self, s, host):
        ev = s.scalars(select(Event).where(Event.host_id == host.id, Event.code == EV_POWER_ON)
                       .order_by(Event.id.desc()).limit(1)).first()
        return None if ev is None else aware(ev.time).timestamp()

    def fence_state(self, s, host) -> str:
        if confirmed_fence(s, host) is not None:
            return policy.FENCE_CONFIRMED
        last = last_fence(s, host)
        if last is not None and last.state == "failed" and last.ended is not None and \
                utcnow() - aware(last.ended) < timedelta(seconds=self.settings.refence_interval):
            return policy.FENCE_FAILED
        return policy.FENCE_NONE

    # ---- one pass -----------------------------------------------------
    def step(self, host_id: str) -> list[policy.Action]:
        """Decide and act for ``host_id`` until nothing more can happen now."""
        done = []
        with self.lock(host_id), self.ctx.sessionmaker() as s:
            for _round in range(3):   # a successful fence changes the facts: decide again
                host = s.get(Host, host_id)
                if host is None:
                    return done
                s.refresh(host)
                self._adopt_agent_fence(s, host)
                agents = self._agents(s, host)
                actions, vms = self._decide(s, host, agents)
                fenced = False
                for action in actions:
                    if not self._act(s, host, agents, vms, action):
                        break
                    done.append(action)
                    if action.kind == policy.FENCE:
                        fenced = True
                        break
                s.commit()
                if not fenced:
                    break
        return done

    def _decide(self, s, host, agents):
        others = s.scalars(select(Host).where(Host.cluster_id == host.cluster_id,
                                              Host.id != host.id)).all()
        vms = {vm.id: vm for vm in self._ha_vms(s, host)}
        me = self._view(s, host, agents)
        snap = policy.Snapshot(
            now=time.time(), host=me,
            cluster_hosts=(me,) + tuple(self._view(s, h) for h in others),
            ha_vms=tuple(self._ha_vm(vm, host) for vm in vms.values()),
            fence_state=self.fence_state(s, host))
        return policy.decide(snap, self.cfg), vms

    def _ha_vm(self, vm, host) -> policy.HaVm:
        on_host = vm.host_id == host.id
        # only a VM on a failed host may move on its lease's word; on a host that
        # answers, its VMs stay where the monitor sees them
        free = self.lease_probe(vm, host) if on_host and host.status == "non_responsive" else None
        return policy.HaVm(id=vm.id, name=vm.name, memory_mb=vm.memory // MiB,
                           priority=vm.ha_priority if vm.ha_priority is not None else 1,
                           released=not on_host, has_lease=not on_host or free is not None,
                           lease_expired=bool(free))

    def _act(self, s, host, agents, vms, action) -> bool:
        """Carry out one action; False stops the pass (later actions depend on it)."""
        kind, refs = action.kind, {"host_id": host.id, "cluster_id": host.cluster_id}
        if kind == policy.WAIT:
            self._event(s, EV_WAIT, f"Host {host.name} is non-responsive; {AUTO} does not fence it "
                        f"yet: {action.reason}.", "warning", once_key=("wait", action.waiting_for), **refs)
        elif kind == policy.SKIP_FENCING:
            self._event(s, EV_FENCE_SKIPPED, f"Fencing of host {host.name} skipped by {AUTO}: "
                        f"{action.reason}.", "warning", once_key=("skip", action.reason), **refs)
        elif kind == policy.HOLD_VM:
            self._event(s, EV_HA_HELD, f"{action.reason}.", "warning",
                        once_key=("hold", action.vm_id), vm_id=action.vm_id, **refs)
        elif kind == policy.FENCE:
            return self.fence_off(s, host, agents, who=AUTO, why=action.reason)
        elif kind == policy.MARK_DOWN:
            fence = confirmed_fence(s, host) or s.get(Fence, host.fence_id)
            self.mark_down(s, host, fence)
        elif kind == policy.RESTART_VM:
            self._restart(s, host, vms[action.vm_id], action)
        elif kind == policy.NO_TARGET:
            self._event(s, EV_HA_RESTART_FAILED, f"HA VM restart waits: {action.reason}.", "error",
                        once_key=("notarget", action.vm_id), vm_id=action.vm_id, **refs)
        return True

    def fence_off(self, s, host, agents, who, why, action="off") -> bool:
        """Power the host off through its BMCs; only a BMC-confirmed off counts."""
        refs = {"host_id": host.id, "cluster_id": host.cluster_id}
        fence = Fence(host_id=host.id, method="bmc", action=action, state="running", requested_by=who,
                      reason=why)
        s.add(fence)
        events.add(s, EV_FENCE_START, f"Fencing host {host.name}: power off through its BMC, "
                   f"requested by {who} because {why}.", "warning", **refs)
        s.commit()
        outcome = fence_through_agents(
            agents, "off", host=host.name, retries=self.settings.fence_retries,
            backoff=self.settings.fence_backoff, deadline=self.settings.off_deadline,
            run=self.run, sleep=self.sleep,
            emit=lambda sev, text: self.event_now(EV_FENCE_AGENT, text + ".", sev, **refs))
        fence.ended, fence.outcome = utcnow(), outcome.message
        if not outcome.confirmed_off:
            fence.state = "failed"
            events.add(s, EV_FENCE_FAILED, f"Fencing host {host.name} failed: {outcome.message}. "
                       "Its HA VMs are not restarted until the host is confirmed off.", "error", **refs)
            s.commit()
            return False
        fence.state, fence.agent = "confirmed", outcome.agent
        events.add(s, EV_FENCE_OK, f"Host {host.name} is powered off, confirmed by its BMC "
                   f"({outcome.agent}).", **refs)
        self.mark_down(s, host, fence)
        self._release_leases(s, host, refs)
        s.commit()
        return True

    def _adopt_agent_fence(self, s, host) -> bool:
        """The engine ran on this host and died with it; the HA agents fenced it
        through its BMC before starting the engine elsewhere. That confirmed
        power-off is this engine's too: record it, do not fence again, and go on
        with the host's HA VMs at once."""
        if self.agent_fences is None or host.status != "non_responsive" or confirmed_fence(s, host):
            return False
        try:
            records = self.agent_fences(s)
        except Exception as exc:   # etcd unreachable: the engine's own fencing goes on as usual
            if str(exc) != self._agent_fences_error:
                log.warning("cannot read the HA agents' fences from etcd: %s", exc)
                self._agent_fences_error = str(exc)
            return False
        self._agent_fences_error = None
        bmcs = {(a.address, a.port or 623) for a in s.scalars(select(FenceAgent).where(FenceAgent.host_id == host.id))}
        last_seen = aware(host.last_seen).timestamp() if host.last_seen is not None else 0.0
        rec = policy.agent_fence_for(records.values(), bmcs, last_seen)
        if rec is None:
            return False
        who = f"the HA agent of host {rec.by}"
        bmc = f"ipmilan:{rec.bmc_address}:{rec.bmc_port}"
        fence = Fence(host_id=host.id, method="bmc", action="off", state="confirmed", agent=bmc,
                      requested_by=who, reason="it ran the engine VM and stopped answering",
                      outcome=rec.detail, started=datetime.fromtimestamp(rec.started, timezone.utc),
                      ended=datetime.fromtimestamp(rec.ended, timezone.utc))
        s.add(fence)
        s.flush()
        refs = {"host_id": host.id, "cluster_id": host.cluster_id}
        events.add(s, EV_AGENT_FENCE, f"Host {host.name} was fenced by {who} (power-off confirmed by its BMC "
                   f"{rec.bmc_address}:{rec.bmc_port}) while the engine was down: the engine does not fence "
                   "it again.", "warning", **refs)
        log.warning("host %s was fenced by %s: adopting that fence", host.name, who)
        self.mark_down(s, host, fence)
        self._release_leases(s, host, refs)
        s.commit()
        return True

    def confirm_manually(self, s, host, who) -> None:
        """'Confirm host has been rebooted': the administrator vouches that it is off."""
        fence = Fence(host_id=host.id, method="manual", action="manual", state="confirmed", requested_by=who,
                      reason="the administrator confirmed that the host has been rebooted",
                      outcome="confirmed manually", ended=utcnow())
        s.add(fence)
        s.flush()
        events.add(s, EV_MANUAL_FENCE, f"{who[0].upper() + who[1:]} confirmed that host {host.name} "
                   "has been rebooted (manual fence); its VMs are considered down.", "warning",
                   host_id=host.id, cluster_id=host.cluster_id)
        self.mark_down(s, host, fence)

    def _release_leases(self, s, host, refs):
        """The host is off: its VMs' leases can be freed now rather than after
        sanlock's host-dead time (minutes), so its HA VMs restart at once."""
        if self.release_leases is None:
            return
        try:
            host_id = self.release_leases(host)
        except Exception as exc:   # restarts then wait for the lease to expire: slower, still safe
            log.warning("could not release the sanlock leases of fenced host %s: %s", host.name, exc)
            events.add(s, EV_LEASES_RELEASED, f"The sanlock leases of fenced host {host.name} could not be "
                       f"released ({exc}); its HA VMs restart once they expire.", "warning", **refs)
            return
        if host_id is not None:
            events.add(s, EV_LEASES_RELEASED, f"Host {host.name}'s sanlock host-id lease (id {host_id}) was "
                       f"released by {AUTO} on its behalf, as the host is confirmed off: the leases of its "
                       "VMs are free.", **refs)

    def mark_down(self, s, host, fence):
        """The host is confirmed off: it is down, held by this fence, and every VM
        it ran is down; HA ones wait for their restart elsewhere."""
        detail = (f"fenced: power-off confirmed by BMC {fence.agent}" if fence.method == "bmc"
                  else f"fenced: reboot confirmed manually by {fence.requested_by}")
        host_svc.set_status(s, host, "down", detail)
        host.fence_id = fence.id
        for vm in s.scalars(select(Vm).where(Vm.host_id == host.id)).all():
            ha = vm.high_availability
            vm.status, vm.host_id, vm.busy_until = "down", None, None
            vm.stop_reason = f"host {host.name} was fenced"
            vm.ha_restart_host_id = host.id if ha else None
            events.add(s, events.VM_DOWN, f"VM {vm.name} is down: its host {host.name} was fenced"
                       + (" (HA VM: will be restarted on another host)." if ha else "."),
                       "warning" if ha else "error", vm_id=vm.id, host_id=host.id)
        s.commit()

    def _restart(self, s, failed, vm, action):
        refs = {"vm_id": vm.id, "cluster_id": vm.cluster_id}
        if vm.host_id != failed.id and self.lease_probe(vm, failed) is False:
            # confirmed down, but its lease is still held (a manual fence, or the
            # release failed): starting it now would stall the target's libvirtd
            self._event(s, EV_LEASE_WAIT, f"HA VM {vm.name} waits for its lease, still held by host "
                        f"{failed.name}, to expire before it is restarted.", "warning",
                        once_key=("leasewait", vm.id), host_id=failed.id, **refs)
            s.commit()
            return
        if vm.host_id == failed.id:
            # lease-expiry path: the host is not confirmed off, the VM's lease is free
            vm.status, vm.host_id, vm.busy_until = "down", None, None
            vm.stop_reason = f"its lease expired on host {failed.name}"
            vm.ha_restart_host_id = failed.id
            s.commit()
        # the engine's scheduler picks the host (memory, spread); the VM-up event names it
        events.add(s, EV_HA_RESTART, f"Restarting HA VM {vm.name} (priority {action.priority}, was on host "
                   f"{failed.name}) on another host, requested by {AUTO}.", host_id=failed.id, **refs)
        s.commit()
        try:
            vm_svc.start_vm(self.ctx, s, vm)
        except Fault as exc:
            s.rollback()
            # once per distinct reason: the watch retries every recheck_interval
            self._event(s, EV_HA_RESTART_FAILED, f"Restart of HA VM {vm.name} failed: {exc.detail}; "
                        "retrying.", "error", once_key=("restartfail", vm.id, exc.detail),
                        host_id=failed.id, **refs)
            s.commit()

    # ---- entry points -------------------------------------------------
    def watch(self, host_id: str, until: float | None = None) -> None:
        """Pass over the host until it is back or its HA VMs are all handled."""
        end = None if until is None else time.monotonic() + until
        while (end is None or time.monotonic() < end) and not self._stopping.is_set():
            try:
                self.step(host_id)
            except Fault as exc:  # a worded failure (e.g. a damaged key file): one line
                log.error("failover pass for host %s failed: %s", host_id, exc.detail or exc)
            except Exception:  # keep watching: a transient DB/libvirt error must not end failover
                log.exception("failover pass for host %s failed", host_id)
            with self.ctx.sessionmaker() as s:
                host = s.get(Host, host_id)
                if host is None:
                    break
                pending = [vm for vm in self._ha_vms(s, host) if vm.host_id != host.id]
                if host.status != "non_responsive" and not pending:
                    break
            self._stopping.wait(self.settings.recheck_interval)
        with self._guard:
            self._watchers.pop(host_id, None)

    def start_watch(self, host_id: str) -> None:
        with self._guard:
            t = self._watchers.get(host_id)
            if t is not None and t.is_alive():
                return
            t = threading.Thread(target=self.watch, args=(host_id,), daemon=True,
                                 name=f"failover:{host_id}")
            self._watchers[host_id] = t
        t.start()

    def resume(self) -> None:
        """At worker start: watch every host a failover was under way for."""
        with self.ctx.sessionmaker() as s:
            ids = set(s.scalars(select(Host.id).where(Host.status == "non_responsive")))
            ids |= {h for h in s.scalars(select(Vm.ha_restart_host_id).where(
                Vm.ha_restart_host_id.is_not(None), Vm.status == "down"))}
        for host_id in ids:
            self.start_watch(host_id)

    def stop(self, timeout: float = 30.0) -> None:
        """End every watch loop (engine shutdown)."""
        self._stopping.set()
        self.wait_idle(timeout)

    def wait_idle(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        for t in list(self._watchers.values()):
            t.join(max(0.0, end - time.monotonic()))
        return not any(t.is_alive() for t in self._watchers.values())
