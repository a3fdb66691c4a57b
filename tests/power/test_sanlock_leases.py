"""Reading hosts' delta leases written by the real sanlock (``sanlock direct``, no daemon)."""

import shutil
import subprocess
import threading
import time

import pytest

from keel_common.sanlock_disk import LockspaceWatcher, read_delta_leases

pytestmark = pytest.mark.skipif(shutil.which("sanlock") is None, reason="sanlock not installed")


def sanlock(*args):
    # -202 is sanlock's I/O timeout: with io_timeout 1 s a stall of this shared
    # machine's disk can cost one; sanlock's own daemon would simply retry
    for _attempt in range(3):
        out = subprocess.run(["sanlock", "direct", *args], capture_output=True, text=True, timeout=60)
        if "done -202" not in out.stdout:
            break
    assert out.returncode == 0 and "done 0" in out.stdout, out.stdout + out.stderr


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def lockspace(tmp_path):
    path = tmp_path / "ls.img"
    with open(path, "wb") as f:
        f.truncate(1024 * 1024)
    shutil.chown(path, "sanlock", "sanlock")
    sanlock("init", "-s", f"testls:0:{path}:0", "-o", "1")   # io timeout 1 s: acquire takes ~2 s
    sanlock("acquire_id", "-s", f"testls:2:{path}:0", "-o", "1")
    return str(path)


def test_records_written_by_sanlock_are_read(lockspace):
    leases = read_delta_leases(lockspace)
    assert leases[2].owner_id == 2 and leases[2].generation == 1
    assert leases[2].timestamp > 0 and leases[2].io_timeout == 1
    assert leases[2].host_dead_seconds == 8 * 1 + 60
    assert leases[1].timestamp == 0 and leases[1].owner_id == 0


def test_watcher_renewing_then_expired(lockspace):
    clock = Clock()
    name = read_delta_leases(lockspace)[2].name
    w = LockspaceWatcher(lockspace, clock=clock)
    since = clock.now
    assert w.renewed_after(since, name) is None      # one look cannot tell
    clock.now += 1
    sanlock("renew_id", "-s", f"testls:2:{lockspace}:0", "-o", "1")
    assert w.renewed_after(since, name) is True
    assert w.renewed_after(clock.now + 0.5, name) is None   # nothing since a later moment yet
    assert w.expired(name) is False
    clock.now += 7                               # no renewal for 3 renewal periods
    assert w.renewed_after(since + 1.5, name) is False
    assert w.expired(name) is False              # not yet sanlock's host-dead time
    clock.now += 62
    assert w.expired(name) is True


def test_released_lease_is_free_and_unknown_host_is_not(lockspace):
    clock = Clock()
    w = LockspaceWatcher(lockspace, clock=clock)
    name = read_delta_leases(lockspace)[2].name
    assert w.expired("no-such-host") is False
    sanlock("release_id", "-s", f"testls:2:{lockspace}:0", "-o", "1")
    assert w.expired(name) is True
    assert w.renewed_after(0, name) is False


def test_unreadable_storage_is_unknown(tmp_path):
    w = LockspaceWatcher(str(tmp_path / "missing"))
    assert w.renewed_after(0, "h1") is None and w.expired("h1") is False


def test_a_change_found_after_an_idle_gap_proves_nothing_about_now(lockspace):
    """The watcher is idle between outages; the first read of a new outage
    finds the timestamp changed since the previous outage. That renewal may
    be long before the host died: it must not count as 'still renewing'
    (or a dead host would never be fenced)."""
    clock = Clock()
    name = read_delta_leases(lockspace)[2].name
    w = LockspaceWatcher(lockspace, clock=clock)
    assert w.renewed_after(clock.now, name) is None          # an earlier episode's read
    clock.now += 500                                           # idle; the host renewed, then died
    sanlock("renew_id", "-s", f"testls:2:{lockspace}:0", "-o", "1")
    since = clock.now - 5                                      # it stopped answering 5 s ago
    assert w.renewed_after(since, name) is None                # the change cannot be dated after `since`
    clock.now += 7                                             # no renewal for 3 renewal periods
    assert w.renewed_after(since, name) is False               # so it may be fenced
    assert w.expired(name) is False                            # its leases are not free yet
    clock.now += 62
    assert w.expired(name) is True


def test_a_watched_lease_is_silent_from_its_last_renewal_not_from_the_outage(lockspace):
    """Followed all the time (watch_forever), a host's silence counts from
    the read after its last renewal: a host that died just before the engine
    noticed is judged once that silence is long enough, not a full window
    after the engine noticed; a renewal after the outage began still proves
    it alive."""
    clock = Clock()
    name = read_delta_leases(lockspace)[2].name
    w = LockspaceWatcher(lockspace, clock=clock)
    w._observe()
    clock.now += 1
    sanlock("renew_id", "-s", f"testls:2:{lockspace}:0", "-o", "1")
    w._observe()                                   # the last renewal, found at this read
    clock.now += 4
    since = clock.now                              # the engine notices the host 4 s later
    assert w.renewed_after(since, name) is None    # 4 s of silence: not yet 2 + 3
    clock.now += 1.5
    assert w.renewed_after(since, name) is False   # 5.5 s since the last renewal, 1.5 s after `since`
    time.sleep(1.1)                                # sanlock's timestamps count whole seconds
    sanlock("renew_id", "-s", f"testls:2:{lockspace}:0", "-o", "1")
    w._observe()
    clock.now += 0.5
    assert w.renewed_after(since, name) is True    # renewed after the outage began: alive


def test_watch_forever_reads_until_stopped(lockspace):
    w = LockspaceWatcher(lockspace)
    stop = threading.Event()
    t = threading.Thread(target=w.watch_forever, args=(stop, 0.05), daemon=True)
    t.start()
    time.sleep(0.3)
    stop.set()
    t.join(2)
    assert not t.is_alive() and read_delta_leases(lockspace)[2].name in w._seen
