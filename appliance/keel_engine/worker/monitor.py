"""The host monitor, part of the engine worker (`keel-engine worker`), never
inside web workers. Every interval it polls every host through libvirt (in
parallel, each under a deadline), keeps host status and every VM's real
state in the database, writes an event for every change, enforces graceful
shutdown deadlines, tells power management about failed hosts and HA VMs
that went down, copies the HA agents' records for the dashboard and asks
running VMs' guest agents what they report (worker/guest_agents.py)."""
import logging
import threading
import time

from sqlalchemy import select
from sqlalchemy.orm.exc import StaleDataError

from .. import virt
from ..models import Host, Vm, utcnow
from ..services import events
from ..services import hosts as host_svc
from ..services import usage
from ..timeutil import aware
from .guest_agents import GuestAgents
from .ha_view import HaView

log = logging.getLogger("keel.engine.monitor")
FAILURES_BEFORE_NON_RESPONSIVE = 2
POLLED = ("up", "non_responsive", "preparing_for_maintenance", "connecting")
# A host the engine fenced is 'down' and points at its fence (fence_id). An
# admin may power it on by hand; it then comes back by itself, as in oVirt
# (to 'up', or to 'maintenance' if the admin had put it there). Hosts down
# for any other reason are not polled.
# Fenced hosts are polled every few cycles only: they are normally powered off,
# and a powered-off machine does not refuse a connection, it lets it run into
# the libvirt deadline, which stretches the whole cycle (hosts are polled in
# parallel and the cycle waits for the slowest) and so delays noticing a
# failure of an 'up' host. Booting takes minutes anyway: a few cycles late
# costs nothing.
FENCED_POLL_EVERY = 4
# the dashboard's charts: one sample of every cluster's use at most this often
# (seconds), taken after a poll from what it stored; a day of them is kept
SAMPLE_EVERY = 60.0


def poll_host(uri, timeout):
    """(facts, {uuid: state}) or raises VirtError."""
    def work():
        conn = virt.libvirt.open(uri)
        try:
            return virt.host_facts(conn), virt.domains(conn)
        finally:
            conn.close()
    return virt.with_deadline(work, timeout, f"poll {uri}")


def poll_all(hosts, timeout):
    results, threads = {}, []

    def one(h_id, uri):
        try:
            results[h_id] = poll_host(uri, timeout)
        except Exception as e:   # any failure = this host did not answer
            results[h_id] = e
    for h in hosts:
        t = threading.Thread(target=one, args=(h.id, h.libvirt_uri), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join(timeout + 2)
    return results


class Monitor:
    def __init__(self, ctx, power=None):
        """power: the worker's PowerManagement (told about failed hosts and HA VMs that went down)."""
        self.config = ctx.config
        self.sessionmaker = ctx.sessionmaker
        self.ctx = ctx
        self.power = power
        self.failures = {}
        self.versions = {}
        self.running_on = {}
        self.duplicates_reported = set()
        self.cycles = 0
        self.fenced_poll_every = FENCED_POLL_EVERY
        self.fenced_announced = set()   # fenced hosts whose polling was logged
        self.ha_down = []
        self.ha_view = HaView(ctx)
        self.guests = GuestAgents(ctx)
        self.sample_every = SAMPLE_EVERY
        self.usage_failing = False     # the last recording failed (said once, until one works)
        self.stopping = threading.Event()

    def run_forever(self):
        log.info("monitor started: polling every %.1f s", self.config.monitor_interval)
        last_purge = 0.0
        last_sample = None
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.poll_once()
                if started - last_purge > 300:
                    self._purge()
                    last_purge = started
            except Exception:   # keep monitoring; the next cycle starts clean
                log.exception("monitor cycle failed")
            if last_sample is None or started - last_sample >= self.sample_every:
                last_sample = started
                self.record_usage()
            self.ha_view.refresh()   # the hosted engine's HA state for the dashboard; never raises
            self.guests.refresh()    # what running VMs' guest agents report; never raises, never waits
            self.stopping.wait(max(0.1, self.config.monitor_interval - (time.monotonic() - started)))

    def poll_once(self):
        with self.sessionmaker() as s:
            polled = Host.status.in_(POLLED)
            if self.cycles % self.fenced_poll_every == 0:
                polled = polled | ((Host.status == "down") & Host.fence_id.is_not(None))
            self.cycles += 1
            hosts = s.scalars(select(Host).where(polled)).all()
            self._announce_fenced(hosts)
            targets = [(h.id, h.libvirt_uri) for h in hosts]
            # Observations may only correct rows they are newer than: a VM
            # whose row changes while we poll (an API stop, start, migrate)
            # is left alone this cycle.
            self.versions = dict(s.execute(select(Vm.id, Vm.version)).all())
        results = poll_all([_H(i, u) for i, u in targets], self.config.libvirt_timeout)
        changes = []
        self.ha_down = []     # (vm id, host id): HA VMs that went down without being asked to
        with self.sessionmaker() as s:
            # A host coming back (from non_responsive, or powered on after a
            # fence) may still run VMs the engine has restarted elsewhere:
            # its domains must not move any VM's record this cycle. The
            # status hook that follows the commit destroys such stale copies.
            returning = {h.id for h in hosts if h.status in ("non_responsive", "connecting") or _fenced(h)}
            seen = {}   # vm uuid -> (host id, state) for every domain found
            running_on = {}   # vm uuid -> ids of the settled hosts where it runs
            for h_id, res in results.items():
                if not isinstance(res, Exception) and h_id not in returning:
                    for uuid, state in res[1].items():
                        if uuid not in seen or state == "up":
                            seen[uuid] = (h_id, state)
                        if state in ("up", "paused"):
                            running_on.setdefault(uuid, set()).add(h_id)
            self.running_on = running_on
            for h_id, res in results.items():
                host = s.get(Host, h_id)
                if host is None:
                    continue
                if isinstance(res, Exception):
                    if _fenced(host):
                        # still off (or cut off): it stays down, quietly. Counting
                        # failures would make it non_responsive and fence it again.
                        self.failures.pop(host.id, None)
                        continue
                    changes += self._host_failed(s, host, res)
                else:
                    changes += self._host_ok(s, host, res[0], res[1], seen, h_id in returning)
            overdue = self._overdue_shutdowns(s, seen)
            try:
                s.commit()
            except StaleDataError:
                # an API worker changed a VM since we read it: its change wins,
                # and the next cycle looks again
                s.rollback()
                log.info("a VM changed while it was observed; re-checking next cycle")
                return
        self._force_off(overdue)
        if self.power is not None:
            for host_id, old, new in changes:
                self.power.host_status_changed(host_id, old, new)
            for vm_id, host_id in self.ha_down:
                self.power.ha_vm_down(vm_id, host_id)
        self._release_stale_claims()

    def _announce_fenced(self, hosts):
        """Log once per fenced episode that the host is watched for its return."""
        for h in hosts:
            if not _fenced(h):
                self.fenced_announced.discard(h.id)   # back: a later fence is a new episode
            elif h.id not in self.fenced_announced:
                self.fenced_announced.add(h.id)
                log.info("host %s is down (%s); polling it every %d cycles until libvirt answers",
                         h.name, h.status_detail, self.fenced_poll_every)

    def record_usage(self):
        """A sample of every cluster's use for the dashboard, and samples older
        than a day deleted: one short transaction of four statements. A
        failure costs this sample only; it is logged when it starts and when
        recording works again, not at every sample."""
        try:
            with self.sessionmaker() as s:
                usage.record(s)
                usage.prune(s)
                s.commit()
        except Exception as e:   # the database was away: the next sample tries again
            if not self.usage_failing:
                log.warning("recording cluster use for the dashboard failed (%s); trying again every %.0f s",
                            e, self.sample_every)
            self.usage_failing = True
            return
        if self.usage_failing:
            log.info("recording cluster use for the dashboard works again")
            self.usage_failing = False

    def _purge(self):
        """Expired sign-ins, and ended jobs past their keep time."""
        from ..services import auth, jobs
        with self.sessionmaker() as s:
            auth.purge_expired(s)
            n = jobs.prune(s, self.config.jobs_keep_finished, self.config.jobs_keep_failed)
            s.commit()
        if n:
            log.info("%d ended job(s) cleared (kept %.0f s when finished, %.0f s when failed)",
                     n, self.config.jobs_keep_finished, self.config.jobs_keep_failed)

    # ---- hosts ---------------------------------------------------------
    def _host_failed(self, s, host, err):
        n = self.failures.get(host.id, 0) + 1
        self.failures[host.id] = n
        if n < FAILURES_BEFORE_NON_RESPONSIVE or host.status == "non_responsive":
            return []
        old = host_svc.set_status(s, host, "non_responsive", f"libvirt does not answer: {err}")
        for vm in s.scalars(select(Vm).where(Vm.host_id == host.id, Vm.status != "down")):
            if self._unchanged(vm):
                self._vm_status(s, vm, "unknown", f"its host {host.name} does not respond")
        return [(host.id, old, "non_responsive")] if old else []

    def _host_ok(self, s, host, facts, domains, seen, returning=False):
        self.failures.pop(host.id, None)
        host.memory_free, host.memory_total = facts["memory_free"], facts["memory_total"]
        host.cpus, host.hostname, host.last_seen = facts["cpus"], facts["hostname"], utcnow()
        changes = []
        if host.status in ("non_responsive", "connecting") or _fenced(host):
            reason = "libvirt answers again"
            if _fenced(host):
                # powered on outside the engine (or never really off): power
                # management destroys stale copies of VMs restarted elsewhere
                reason = f"libvirt answers again after the host was {host.status_detail}"
            new = host_svc.returned_status(host)
            host.fence_id = None
            old = host_svc.set_status(s, host, new, reason)
            if old:
                changes.append((host.id, old, new))
        now = utcnow()
        # VMs the database places here
        for vm in s.scalars(select(Vm).where(Vm.host_id == host.id, Vm.status != "down")):
            if (vm.busy_until and aware(vm.busy_until) > now) or not self._unchanged(vm):
                continue   # an API worker is driving this VM right now
            # Where the database places it counts first; elsewhere only if not here.
            here = domains.get(vm.id)
            if here in ("up", "paused"):
                where = (host.id, here)
            else:
                where = None if returning else seen.get(vm.id)
            if where is None:
                requested = vm.shutdown_deadline is not None
                reason = ("shut down as requested" if requested else
                          f"not running on host {host.name} any more (shut down from inside the guest, "
                          "crashed, or stopped outside Keel)")
                self._vm_down(s, vm, reason, severity="normal" if requested else "warning")
                if vm.high_availability and not requested:
                    self.ha_down.append((vm.id, host.id))
            elif where[0] != host.id:
                other = s.get(Host, where[0])
                vm.host_id = where[0]
                events.add(s, events.VM_STATE, f"VM {vm.name} found running on host {other.name} "
                           f"(expected on {host.name}).", severity="warning", vm_id=vm.id, host_id=other.id)
                self._vm_status(s, vm, where[1], f"observed on host {other.name}")
            elif not (vm.status == "powering_down" and where[1] == "up"):
                self._vm_status(s, vm, where[1], f"observed on host {host.name}")
            vm.busy_until = None
        # domains of known VMs that the database does not place here (adopt them)
        for uuid, state in domains.items():
            if seen.get(uuid, (None,))[0] != host.id:
                continue
            vm = s.get(Vm, uuid)
            if vm is None or vm.host_id == host.id:
                continue   # not ours (e.g. the hosted engine VM itself)
            if (vm.busy_until and aware(vm.busy_until) > now) or not self._unchanged(vm) \
                    or state not in ("up", "paused"):
                continue
            if vm.host_id in self.running_on.get(uuid, ()):
                # Running where the engine placed it AND here: two copies of
                # one disk. Never adopt the copy; say it loudly, once.
                if uuid not in self.duplicates_reported:
                    self.duplicates_reported.add(uuid)
                    events.add(s, events.VM_STATE, f"VM {vm.name} runs on host {host.name} as well as on "
                               f"host {s.get(Host, vm.host_id).name}, where the engine placed it; the copy on "
                               f"{host.name} is not the engine's and must be stopped.", severity="error",
                               vm_id=vm.id, host_id=host.id)
                    log.error("VM %s runs on two hosts (%s and its own); not adopting the copy",
                              vm.name, host.name)
                continue
            vm.host_id = host.id
            events.add(s, events.VM_STATE, f"VM {vm.name} found running on host {host.name}.",
                       severity="warning", vm_id=vm.id, host_id=host.id)
            self._vm_status(s, vm, state, f"observed on host {host.name}")
        return changes

    # ---- vms -------------------------------------------------------------
    def _unchanged(self, vm):
        return self.versions.get(vm.id) == vm.version

    def _vm_status(self, s, vm, new, reason):
        if vm.status == new:
            return
        old, vm.status = vm.status, new
        sev = "warning" if new in ("unknown", "paused") else "normal"
        events.add(s, events.VM_STATE, f"VM {vm.name} status changed from {old} to {new}: {reason}.",
                   severity=sev, vm_id=vm.id, host_id=vm.host_id)

    def _vm_down(self, s, vm, reason, severity="warning"):
        old = vm.status
        vm.status, vm.host_id, vm.shutdown_deadline, vm.stop_reason = "down", None, None, reason
        vm.busy_until = None
        events.add(s, events.VM_DOWN, f"VM {vm.name} is down ({old} before): {reason}.", severity=severity,
                   vm_id=vm.id)

    def _overdue_shutdowns(self, s, seen):
        """[(vm id, vm name, host uri)] of graceful shutdowns past their deadline."""
        now, out = utcnow(), []
        for vm in s.scalars(select(Vm).where(Vm.status == "powering_down", Vm.shutdown_deadline.is_not(None))):
            if aware(vm.shutdown_deadline) > now or vm.id not in seen or not self._unchanged(vm):
                continue
            out.append((vm.id, vm.name, s.get(Host, seen[vm.id][0]).libvirt_uri))
        return out

    def _force_off(self, overdue):
        """Power off what did not shut down in time: the libvirt calls first, with
        no transaction open, then one short transaction records them."""
        done = []
        for vm_id, name, uri in overdue:
            def destroy(uri=uri, vm_id=vm_id):
                conn = virt.libvirt.open(uri)
                try:
                    conn.lookupByUUIDString(vm_id).destroy()
                finally:
                    conn.close()
            try:
                virt.with_deadline(destroy, self.config.libvirt_timeout, f"force off {name}")
                done.append(vm_id)
            except virt.VirtError as e:
                log.warning("could not power off %s after its shutdown timeout: %s", name, e)
        if not done:
            return
        with self.sessionmaker() as s:
            for vm in s.scalars(select(Vm).where(Vm.id.in_(done), Vm.status == "powering_down")):
                self._vm_down(s, vm, f"did not shut down within {self.config.shutdown_timeout:.0f} s; powered off",
                              severity="warning")
            s.commit()

    # ---- claims nobody finishes -----------------------------------------------
    def _release_stale_claims(self):
        """A VM claimed for a start that never reached a host (the job was lost
        with a worker that died) goes back to down once its claim expires."""
        now = utcnow()
        with self.sessionmaker() as s:
            for vm in s.scalars(select(Vm).where(Vm.status == "wait_for_launch", Vm.host_id.is_(None),
                                                 Vm.busy_until.is_not(None))):
                if aware(vm.busy_until) < now:
                    self._vm_down(s, vm, "its start did not reach a host in time", severity="warning")
            try:
                s.commit()
            except StaleDataError:
                s.rollback()


def _fenced(host):
    return host.status == "down" and host.fence_id is not None


class _H:
    def __init__(self, ident, uri):
        self.id, self.libvirt_uri = ident, uri

