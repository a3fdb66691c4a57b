"""The agent's real environment against real etcd, sanlock and brokers:
the etcd claim decides who starts, sanlock's engine lease is read from the
real daemons, and losing etcd stops the engine before the etcd lease TTL."""
import os
import subprocess
import sys
import time

import pytest

from keel_agent.agent import Agent
from keel_agent.realenv import RealEnvironment
from keel_agent.score import score_constants
from keel_agent.states import BUSY, CHECK_LEASE, Action, State
from keel_common.config import load_host_config

from .conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.root]


class Host:
    def __init__(self, path, log):
        self.cfg = load_host_config(path)
        self.env = RealEnvironment(self.cfg)
        self.agent = Agent(self.env, score_constants(self.cfg.score),
                           lambda level, msg: log.append(f"host{self.cfg.host_id}: {msg}"))

    @property
    def state(self):
        return self.agent.memory.state

    def vm_running(self):
        return self.env.vm_state() == "running"


@pytest.fixture(scope="module")
def hosts(agent_cluster):
    log = []
    hs = [Host(p, log) for p in agent_cluster["configs"]]
    yield hs, log


def cycle_until(hs, pred, timeout, what):
    def step():
        for h in hs:
            h.agent.cycle()
        return pred()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        started = time.monotonic()
        if step():
            return
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    raise AssertionError(f"{what}: not reached in {timeout} s; states {[str(h.state) for h in hs]}")


def test_exactly_one_host_starts_the_engine(hosts):
    hs, log = hosts
    cycle_until(hs, lambda: any(h.state == State.EngineUp for h in hs), 90, "one host EngineUp")
    running = [h for h in hs if h.vm_running()]
    assert len(running) == 1, log
    owner = running[0].env.broker.call("status")["owner"]
    assert owner["host_id"] == running[0].cfg.host_id
    # A few more cycles: the other host never starts a second engine.
    for _ in range(3):
        for h in hs:
            h.agent.cycle()
        assert sum(h.vm_running() for h in hs) == 1
        time.sleep(1)


def test_lease_held_by_another_host_blocks_the_start(hosts, agent_cluster):
    hs, _ = hosts
    h1, h2 = hs
    cfg2 = h2.cfg
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, sanlock\n"
         "fd = sanlock.register()\n"
         "sanlock.acquire(sys.argv[1].encode(), sys.argv[2].encode(), [(sys.argv[3], 0)], slkfd=fd)\n"
         "print('held', flush=True)\n"
         "sys.stdin.read()\n",
         cfg2.storage.lockspace, cfg2.storage.lease_name, cfg2.storage.lease_path],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, SANLOCK_RUN_DIR=cfg2.storage.sanlock_run_dir))
    try:
        assert holder.stdout.readline().strip() == "held"
        assert h1.env.leases.live_owners() == (2,)
        outcome = h1.env.execute([Action(CHECK_LEASE)])[0]
        assert not outcome.ok and outcome.code == BUSY and outcome.detail == "host 2"
    finally:
        holder.kill()
        holder.wait()
    # The holder process died with its daemon alive: the lease frees at once.
    wait_for(lambda: h1.env.leases.live_owners() == (), 10, "lease freed")
    assert h1.env.execute([Action(CHECK_LEASE)])[0].ok


def test_losing_etcd_stops_the_engine_before_the_lease_expires(hosts, agent_cluster):
    hs, log = hosts
    etcd = agent_cluster["etcd"]
    engine_host = next(h for h in hs if h.vm_running())
    ttl = engine_host.cfg.timing.etcd_lease_ttl
    etcd.pause()
    try:
        last_renewed = engine_host.env.broker.call("status")["etcd"]["last_renewed"]
        cycle_until(hs, lambda: not engine_host.vm_running(), 3 * ttl, "engine stopped after etcd loss")
        stopped_at = time.time()
        assert any("etcd lease not renewed" in line for line in log), log
        # Stopped before the lease could expire and another host win the claim.
        assert stopped_at - last_renewed < ttl, (stopped_at - last_renewed, log)
        print(f"\nengine VM gone {stopped_at - last_renewed:.1f} s after the last etcd renewal (TTL {ttl} s)")
    finally:
        etcd.resume()
    # etcd back: one engine again (on the best host), never two.
    cycle_until(hs, lambda: sum(h.vm_running() for h in hs) == 1 and
                any(h.state == State.EngineUp for h in hs), 120, "engine running again")
    assert sum(h.vm_running() for h in hs) == 1
    print("\n".join(log))  # shown with -s: the decision log of the whole module


def test_cli_requests_in_global_maintenance(hosts):
    hs, log = hosts
    engine_host = next(h for h in hs if h.vm_running())
    other = next(h for h in hs if h is not engine_host)
    broker = engine_host.env.broker
    broker.call("set_maintenance", mode="global")
    try:
        cycle_until(hs, lambda: all(h.state == State.GlobalMaintenance for h in hs), 30, "global maintenance")
        broker.call("request", action="vm-shutdown")
        cycle_until(hs, lambda: not engine_host.vm_running(), 30, "vm-shutdown honoured")
        # Nobody restarts it during global maintenance ...
        for _ in range(3):
            for h in hs:
                h.agent.cycle()
            time.sleep(1)
        assert not any(h.vm_running() for h in hs)
        # ... until the admin starts it, here on the other host (claim + lease still required).
        other.env.broker.call("request", action="vm-start")
        cycle_until(hs, lambda: other.vm_running(), 30, "vm-start honoured")
        assert other.env.broker.call("status")["owner"]["host_id"] == other.cfg.host_id
    finally:
        broker.call("set_maintenance", mode="none")
    cycle_until(hs, lambda: other.state == State.EngineUp, 30, "adopted after maintenance")
    assert sum(h.vm_running() for h in hs) == 1
