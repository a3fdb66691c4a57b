"""Extension points for the power-management module.

The engine core calls these; by default nothing is registered. The power
module registers its handlers at import time:

    from keel_engine.services import hooks
    hooks.on_host_status_changed(my_handler)   # handler(ctx, host, old, new)
    hooks.set_fence_handler(my_fencer)          # fencer(ctx, host, action, agents) -> dict
"""
import logging

log = logging.getLogger("keel.engine.hooks")

_status_handlers = []
_fence_handler = None


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


def set_fence_handler(handler):
    global _fence_handler
    _fence_handler = handler


def fence_handler():
    return _fence_handler
