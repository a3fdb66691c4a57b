"""Audit events: every user-visible operation and every observed state
change writes one, and logs it once (journalctl shows the same line)."""
import logging

from .. import text
from ..models import Event

log = logging.getLogger("keel.engine.events")

# oVirt-like codes, so users grepping for familiar numbers find them
VM_CREATED, VM_REMOVED, VM_UPDATED = 34, 113, 35
VM_STARTING, VM_UP, VM_DOWN, VM_STOPPED, VM_SHUTDOWN = 153, 32, 61, 33, 73
VM_MIGRATION_START, VM_MIGRATION_DONE, VM_MIGRATION_FAILED = 62, 63, 64
VM_REBOOT, VM_STATE = 157, 9000
VM_SET_TICKET = 164
HOST_ADDED, HOST_REMOVED, HOST_UP, HOST_NON_RESPONSIVE, HOST_MAINTENANCE = 42, 43, 13, 12, 16
HOST_ADD_FAILED = 505
HOST_ACTIVATED, HOST_PREPARING, HOST_MAINTENANCE_FAILED, HOST_FENCE = 17, 9001, 17001, 9002
SNAPSHOT_CREATED, SNAPSHOT_RESTORED, SNAPSHOT_REMOVED = 68, 71, 342
TEMPLATE_CREATED, TEMPLATE_REMOVED = 48, 49
DISK_CREATED, DISK_REMOVED = 2021, 2014
DISK_UPDATED, DISK_EXTENDED, DISK_EXTEND_FAILED = 88, 371, 370
OBJECT_ADDED, OBJECT_REMOVED, OBJECT_UPDATED = 9100, 9101, 9102
# hot-plug on running VMs: oVirt's NETWORK_(DE)ACTIVATE_VM_INTERFACE_SUCCESS/_FAILURE
# and USER_HOTPLUG_DISK, USER_HOTUNPLUG_DISK (and their USER_FAILED_ twins)
NIC_PLUGGED, NIC_PLUG_FAILED, NIC_UNPLUGGED, NIC_UNPLUG_FAILED = 1012, 1013, 1014, 1015
DISK_PLUGGED, DISK_PLUG_FAILED, DISK_UNPLUGGED, DISK_UNPLUG_FAILED = 2000, 2001, 2002, 2003
USER_LOGIN, USER_LOGOUT, USER_LOGIN_FAILED, USER_LOGIN_THROTTLED = 30, 31, 114, 9200
CUSTOM = 9999

LEVEL = {"normal": logging.INFO, "warning": logging.WARNING,
         "error": logging.ERROR, "alert": logging.ERROR}


def add(session, code, description, severity="normal", **refs):
    description = text.clean(description)
    ev = Event(code=code, description=description, severity=severity, **refs)
    session.add(ev)
    log.log(LEVEL.get(severity, logging.INFO), "event %s: %s", code, description)
    return ev
