"""VM consoles (oVirt's graphics consoles). A running VM's display is VNC on
its host's management address (keel_common.domainxml; never every address),
behind a random password nobody is told. A console ticket is a one-time
password the engine worker sets on the running display through libvirt for a
short time (oVirt's ticket): whoever holds the `connect_to_vm` permit on the
VM may ask for one.

Where a ticket's password is kept, and for how long:

- the request makes it (`secrets`) and records it in the job's params: the
  engine worker needs it there;
- the worker takes it out of the params (committed) before it asks the host
  anything, and puts it in the job's result once the display has it;
- `console()` hands it out once, to the user who asked for it, and clears
  it from the result in the same statement (a second read gets a 409);
- a password nobody read is cleared when its ticket expires
  (`clear_expired`, every few seconds in the engine worker).

A job's params and result are never shown by the API (GET /jobs shows the
description and steps), and no description, event or log line names the
password. After `valid_to` the display refuses the password (QEMU's own
expiry); a client connected before stays connected."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import libvirt
from sqlalchemy import func, or_, select, update

from keel_common import domainxml

from .. import virt
from ..errors import bad_request, conflict, not_found
from ..models import Event, Host, Job, utcnow
from ..timeutil import aware
from . import access, events, jobs
from . import vms as vm_svc

# oVirt's id of a VM's VNC console ("vnc" in hex): one per VM, the same for every VM
CONSOLE_ID = "766e63"
DEFAULT_EXPIRY, MAX_EXPIRY = 120, 3600
# a display shows something in these states (oVirt's too); not while the VM
# starts, migrates or is down
CONSOLE_STATES = ("up", "powering_up", "reboot_in_progress", "paused", "powering_down")


@dataclass(frozen=True)
class ConsoleTicket:
    vm_id: str
    address: str       # where the display listens (the host's management address)
    port: int
    password: str
    valid_to: datetime


def _iso(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def request_ticket(ctx, s, vm, expiry_seconds: int = DEFAULT_EXPIRY) -> jobs.Job:
    """Record the job that sets a new one-time password on the VM's display
    for `expiry_seconds`; read it with `console()` once the job ended."""
    access.check(ctx, s, "connect_to_vm", vm)
    if not 1 <= expiry_seconds <= MAX_EXPIRY:
        raise bad_request(f"ticket.expiry: from 1 to {MAX_EXPIRY} seconds, got {expiry_seconds}")
    if vm.status not in CONSOLE_STATES or vm.host_id is None:
        raise conflict(f"VM {vm.name} is {vm.status}; a console is for a running VM")
    # whole seconds (libvirt's unit), rounded up: never shorter than asked
    valid_to = (utcnow() + timedelta(seconds=expiry_seconds, microseconds=999999)).replace(microsecond=0)
    return jobs.submit(s, jobs.VM_CONSOLE_TICKET,
                       {"vm_id": vm.id, "valid_to": _iso(valid_to), "password": domainxml.new_password()},
                       f"Setting a console ticket for VM {vm.name}", ctx.user_id)


def run_ticket(ctx, s, job):
    """(worker) Set the ticket's password on the running display, valid
    until its end; the result says where to connect."""
    params = dict(job.params or {})
    password = params.pop("password", None)
    job.params = params          # out of the row before the host is asked anything
    s.commit()
    vm = vm_svc._vm(s, job)
    valid_to = _parse(params["valid_to"])
    if not password or valid_to <= utcnow():
        raise conflict(f"the console ticket for VM {vm.name} expired before the engine worker could set it; "
                       "ask for a new one")
    if vm.status not in CONSOLE_STATES:
        raise conflict(f"VM {vm.name} is {vm.status}; a console is for a running VM")
    host, conn, dom = vm_svc._domain(ctx, s, vm)
    timeout = ctx.config.libvirt_timeout
    try:
        if dom is None:
            raise conflict(f"VM {vm.name} is not running on host {host.name}")
        # the update names the display's own address: libvirt refuses to move it
        address, port = domainxml.vnc_display(
            virt.with_deadline(lambda: dom.XMLDesc(0), timeout, f"read {vm.name}"))
        if address is None:
            raise conflict(f"VM {vm.name} has no VNC display; stop and start it to get one")
        xml = domainxml.graphics_xml(domainxml.Vnc(listen=address, password=password, valid_to=valid_to))
        virt.with_deadline(lambda: dom.updateDeviceFlags(xml, libvirt.VIR_DOMAIN_AFFECT_LIVE), timeout,
                           f"set the console password of {vm.name}")
    except virt.VirtError as e:
        raise conflict(f"cannot set a console ticket for VM {vm.name} on host {host.name}: {e}") from None
    except ValueError as e:    # the display listens where no ticket may be given (every address)
        raise conflict(f"VM {vm.name}: {e}; stop and start it to move its display") from None
    finally:
        conn.close()
    if port is None:
        raise conflict(f"VM {vm.name}'s display has no port yet; try again")
    events.add(s, events.VM_SET_TICKET, f"A console ticket for VM {vm.name} was set on host {host.name}, "
               f"valid until {params['valid_to']}.", vm_id=vm.id, host_id=host.id, user_id=job.owner_id)
    return {"vm_id": vm.id, "address": address, "port": port, "password": password,
            "valid_to": params["valid_to"]}


def console(ctx, s, job) -> ConsoleTicket:
    """The ticket a vm.console_ticket job set, for the user who asked for it,
    once: its password leaves the job's row in the caller's transaction (see
    the module's docstring). A job still running is a 409 (wait for it first,
    as the API does), a failed one its own fault."""
    row = s.get(Job, job.id, populate_existing=True)
    if row is None or row.kind != jobs.VM_CONSOLE_TICKET or (
            not access.is_engine(ctx) and row.owner_id != ctx.user_id):
        raise not_found("console ticket", job.id)
    if row.status == "failed":
        raise jobs.fault_of(row)
    if row.status != "finished":
        raise conflict(f"{row.description}: not done yet; ask again in a moment")
    result = dict(row.result or {})
    password = result.pop("password", None)
    gone = conflict(f"{row.description}: its password was handed out already or has expired; ask for a new one")
    if not password or _parse(result["valid_to"]) <= utcnow():
        raise gone
    taken = s.execute(update(Job).where(Job.id == row.id, Job.result["password"].as_string() == password)
                      .values(result=result).execution_options(synchronize_session=False)).rowcount
    if taken != 1:     # another reader took it first
        raise gone
    s.expire(row)
    return ConsoleTicket(vm_id=result["vm_id"], address=result["address"], port=int(result["port"]),
                         password=password, valid_to=_parse(result["valid_to"]))


def clear_expired(s) -> int:
    """(worker) Clear the password of every ticket whose time is over and
    that nobody read (nor the worker took); returns how many. Few rows ever
    hold one, so the query stays small however many jobs there are."""
    holding = or_(Job.params["password"].as_string().is_not(None),
                  Job.result["password"].as_string().is_not(None))
    now, cleared = utcnow(), 0
    for job in s.scalars(select(Job).where(Job.kind == jobs.VM_CONSOLE_TICKET, holding)):
        params, result = dict(job.params or {}), dict(job.result or {})
        if _parse(result.get("valid_to") or params["valid_to"]) > now:
            continue
        params.pop("password", None)
        result.pop("password", None)
        job.params, job.result = params, result
        cleared += 1
    return cleared


def display(s, vm) -> tuple[str | None, int | None]:
    """(address, port) of a VM's display as the engine knows it without asking
    a host: its host's address while it runs; the port from the newest ticket
    set since the VM last started or moved (None before one). `s` may be a
    plain connection (a GET)."""
    if vm.status not in CONSOLE_STATES or vm.host_id is None:
        return None, None
    address = s.execute(select(Host.address).where(Host.id == vm.host_id)).scalar()
    last = s.execute(select(Job.result, Job.end_time).where(
        Job.kind == jobs.VM_CONSOLE_TICKET, Job.status == "finished",
        Job.params["vm_id"].as_string() == vm.id).order_by(Job.end_time.desc()).limit(1)).first()
    if last is None or not (last.result or {}).get("port"):
        return address, None
    moved = s.execute(select(func.max(Event.time)).where(
        Event.vm_id == vm.id, Event.code == events.VM_MIGRATION_DONE)).scalar()
    if any(t is not None and aware(t) > aware(last.end_time) for t in (vm.start_time, moved)):
        return address, None
    return address, int(last.result["port"])
