"""Extension points for the power-management module.

The engine core calls these; by default nothing is registered. The power
module registers its handlers at import time:

    from keel_engine.services import hooks
    hooks.on_host_status_changed(my_handler)   # handler(ctx, host, old, new)
    hooks.set_fence_handler(my_fencer)          # fencer(ctx, host, action, agents) -> dict
    hooks.set_vm_lease_handler(my_leases)       # see vm_lease() below
"""
import logging

log = logging.getLogger("keel.engine.hooks")

_status_handlers = []
_ha_down_handlers = []
_fence_handler = None
_vm_lease_handler = None
_agent_tester = None


def on_host_status_changed(handler):
    _status_handlers.append(handler)
    return handler


def host_status_changed(ctx, host, old, new):
    """Called by the monitor (once per change) after the change is committed."""
    for handler in list(_status_handlers):
        try:
            handler(ctx, host, old, new)
        except Exception:   # a broken handler must not stop host monitoring
            log.exception("host status handler %r failed for %s %s->%s", handler, host.name, old, new)


def on_ha_vm_down(handler):
    """handler(ctx, vm_id, host_id): an HA VM went down on a host without the
    engine asking (crash, killed, shut down from inside the guest)."""
    _ha_down_handlers.append(handler)
    return handler


def ha_vm_down(ctx, vm_id, host_id):
    """Called by the monitor after the VM's 'down' is committed."""
    for handler in list(_ha_down_handlers):
        try:
            handler(ctx, vm_id, host_id)
        except Exception:   # a broken handler must not stop monitoring
            log.exception("HA VM down handler %r failed for VM %s", handler, vm_id)


def set_fence_handler(handler):
    global _fence_handler
    _fence_handler = handler


def fence_handler():
    return _fence_handler


def set_agent_tester(handler):
    """handler(ctx, session, host, agent_id) -> action dict: oVirt UI's fence agent "Test"."""
    global _agent_tester
    _agent_tester = handler


def agent_tester():
    return _agent_tester


def set_vm_lease_handler(handler):
    """handler.lease_for(ctx, s, vm) -> VmLeaseSpec | None (may raise a Fault);
    handler.remove(ctx, s, vm) when the VM is removed."""
    global _vm_lease_handler
    _vm_lease_handler = handler


def vm_lease(ctx, s, vm):
    """The sanlock lease the VM's domain must hold, ready on storage; None: no lease.
    Without a registered handler a VM that asks for a lease cannot start: running
    it without one would silently drop the guarantee the lease gives."""
    if _vm_lease_handler is None:
        if vm.lease_storage_domain_id:
            from ..errors import conflict
            raise conflict(f"VM {vm.name} has a lease, but this engine has no VM lease support loaded")
        return None
    return _vm_lease_handler.lease_for(ctx, s, vm)


def vm_removed(ctx, s, vm):
    if _vm_lease_handler is not None and vm.lease_storage_domain_id:
        _vm_lease_handler.remove(ctx, s, vm)
