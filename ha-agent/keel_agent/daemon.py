"""keel-ha-agent: the per-host HA agent daemon.

    keel-ha-agent --config /etc/keel/hosted-engine.conf

Runs one decision cycle every [timing] cycle seconds. systemd: Type=notify
(READY=1 after the first cycle, WATCHDOG=1 every cycle). SIGTERM/SIGINT end
the loop after the current cycle; the engine VM is left running on purpose,
so that a restarted agent adopts it instead of restarting the engine."""
from __future__ import annotations

import argparse
import faulthandler
import signal
import sys
import threading
import time

from keel_common import sdnotify
from keel_common.config import ConfigError, load_host_config
from keel_common.logs import setup_logging

from .agent import Agent, logger_emit
from .score import ScoreConfigError, score_constants

PROG = "keel-ha-agent"


def parse_args(argv):
    p = argparse.ArgumentParser(prog=PROG, description="Keel HA agent: keeps the engine VM running "
                                "on exactly one healthy host.")
    p.add_argument("--config", default=None, help="host configuration file "
                   "(default: $KEEL_CONFIG or /etc/keel/hosted-engine.conf)")
    p.add_argument("--debug", action="store_true", help="log debug detail")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_host_config(args.config)
        constants = score_constants(cfg.score)
    except (ConfigError, ScoreConfigError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    log = setup_logging(PROG, args.debug)
    try:
        from .realenv import RealEnvironment
        env = RealEnvironment(cfg)
    except ImportError as e:
        print(f"{PROG}: error: cannot load libvirt/sanlock bindings: {e}", file=sys.stderr)
        return 1

    stop = threading.Event()

    def _on_signal(signum, _frame):
        log.info("received %s: stopping the agent (the engine VM is left running)",
                 signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # `kill -USR1 <pid>` writes every thread's stack to the journal: how to
    # see where a stuck agent is stuck.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    agent = Agent(env, constants, logger_emit(log))
    log.info("agent started for host %d (%s), cycle %gs, profile %s",
             cfg.host_id, cfg.hostname, cfg.timing.cycle, cfg.timing.profile)
    ready = False
    while not stop.is_set():
        started = time.monotonic()
        try:
            d = agent.cycle()
        except Exception:  # a bug must not kill HA silently: log it, keep cycling
            log.exception("cycle failed")
            d = None
        if not ready:
            sdnotify.notify("READY=1")
            ready = True
        if d is not None:
            # Only a loop that really decides feeds the watchdog: a cycle that
            # keeps failing gets the agent restarted by systemd (it adopts the VM).
            sdnotify.notify(f"WATCHDOG=1\nSTATUS={d.memory.state}, score {d.score}")
        else:
            sdnotify.notify("STATUS=cycle failed")
        wait = cfg.timing.cycle - (time.monotonic() - started)
        for deadline in (agent.memory.fence_settle_until, agent.memory.fence_check_at):
            if deadline is not None and deadline > time.time():
                # a fence and the start after it wait for a deadline, not for
                # the next cycle (up to 10 s later in production)
                wait = min(wait, deadline - time.time() + 0.05)
        stop.wait(max(0.0, wait))
    sdnotify.notify("STOPPING=1")
    # Others must not count on this host while no agent runs here; the
    # engine claim (held by the broker's etcd lease) still protects the VM.
    vm_up = env.vm_state() == "running"
    env.publish({"state": "AgentStopped", "score": 0, "stopped": True,
                 "engine": {"vm": "up" if vm_up else "down", "health": "unknown",
                            "detail": "Up" if vm_up else "Down", "reason": "agent stopped"}})
    log.info("agent stopped in state %s", agent.memory.state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
