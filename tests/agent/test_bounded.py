"""A hung libvirt or sanlock call must not stop the agent's cycle."""
import threading
import time

import pytest

from keel_common.bounded import BoundedCaller, CallTimeout


def test_result_and_errors_pass_through():
    c = BoundedCaller("lib")
    assert c.call(1, lambda x: x + 1, 1) == 2
    with pytest.raises(KeyError):
        c.call(1, {}.__getitem__, "x")


def test_hung_call_times_out_and_later_calls_fail_fast_until_it_returns():
    release = threading.Event()
    c = BoundedCaller("sanlock")
    with pytest.raises(CallTimeout, match="did not answer within 0.2 s"):
        c.call(0.2, release.wait)
    started = time.monotonic()
    with pytest.raises(CallTimeout, match="has not answered an earlier call"):
        c.call(5, lambda: 1)
    assert time.monotonic() - started < 1  # no second thread waits on the hung daemon
    release.set()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            assert c.call(5, lambda: 7) == 7
            break
        except CallTimeout:
            time.sleep(0.05)
    else:
        raise AssertionError("caller never recovered after the hung call returned")
