"""The agent's fence procedure: a host's lease is released only after its
BMC confirmed the power-off, every step is recorded, and a failure leaves
the lease alone and says why."""
import pytest

from keel_agent.fence import FenceSteps, PowerOff, fence_host
from keel_agent.states import FENCE_HOST
from keel_common.bmc import FAILED, FENCED, FENCING, BmcCredentials


class World:
    def __init__(self, off: PowerOff | Exception, release_error: Exception | None = None):
        self.off, self.release_error = off, release_error
        self.calls, self.records = [], []
        self.t = 100.0

    def steps(self) -> FenceSteps:
        def power_off(creds):
            self.calls.append(("off", int(creds.address.rsplit(".", 1)[1])))
            if isinstance(self.off, Exception):
                raise self.off
            return self.off

        def release(target):
            self.calls.append(("release", target))
            if self.release_error:
                raise self.release_error

        def clock():
            self.t += 0.5
            return self.t
        return FenceSteps(generation=lambda target: 7,
                          bmc=lambda target: BmcCredentials(f"127.0.3.{target}", 623, "admin", "pw"),
                          power_off=power_off, release_lease=release,
                          record=self.records.append, clock=clock)


def test_release_comes_only_after_a_confirmed_power_off():
    w = World(PowerOff(True, "power off confirmed"))
    out = fence_host(2, 1, "dead", w.steps())
    assert out.kind == FENCE_HOST and out.ok
    assert w.calls == [("off", 1), ("release", 1)]
    assert [r.state for r in w.records] == [FENCING, FENCED]
    last = w.records[-1]
    assert (last.host_id, last.by, last.generation) == (1, 2, 7)
    assert (last.bmc_address, last.bmc_port) == ("127.0.3.1", 623)   # how the engine finds the host
    assert last.ended is not None and last.ended >= last.started


@pytest.mark.parametrize("off", [
    PowerOff(False, "BMC accepted power off but still reports on"),   # a BMC that did not confirm
    PowerOff(False, "no result within the 20 s deadline"),             # a BMC that hung
    ConnectionRefusedError("no route"),                                # the call itself failed
])
def test_no_release_without_a_confirmed_power_off(off):
    w = World(off)
    out = fence_host(2, 1, "dead", w.steps())
    assert not out.ok and "not confirmed" in out.detail
    assert ("release", 1) not in w.calls
    assert [r.state for r in w.records] == [FENCING, FAILED]
    assert "not confirmed" in w.records[-1].detail


def test_a_failed_release_is_a_failed_fence():
    w = World(PowerOff(True, "off"), release_error=RuntimeError("sanlock direct release_id failed: -5"))
    out = fence_host(2, 1, "dead", w.steps())
    assert not out.ok and "not released" in out.detail
    assert w.records[-1].state == FAILED


def test_an_unreadable_lease_stops_before_the_bmc():
    w = World(PowerOff(True, "off"))
    steps = w.steps()
    steps.generation = lambda target: (_ for _ in ()).throw(OSError("EIO"))
    out = fence_host(2, 1, "dead", steps)
    assert not out.ok and w.calls == [] and w.records == []
