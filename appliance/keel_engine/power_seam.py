"""Loads the power-management module (appliance/keel_engine/power/) when it
is installed: it registers its fence handler and host-status hook once per
process (each API worker and the monitor)."""
import logging

log = logging.getLogger("keel.engine")


def install(ctx):
    try:
        from .power import handlers
    except ImportError:
        log.info("power management module not installed: fencing is unavailable")
        return
    try:
        handlers.install(ctx)
    except Exception:   # the engine must run even if power management cannot
        log.exception("power management failed to initialise; fencing is unavailable")
