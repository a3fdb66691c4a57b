"""Headless Debian Chromium driven through Selenium, for the web UI's browser
tests.

The browser reaches 127.0.0.0/8 only: every other address goes to a proxy
port on 127.0.0.1 that refuses connections, no host name but localhost
resolves, and the background services that call home are off. Each browser
has a profile of its own under the test's tmp_dir, and closing it leaves no
chromedriver or chromium process behind: those still up after quit() are
killed by PID.

    with chromium(tmp_path) as driver:
        driver.get(url)
        screenshot(driver, "signin")
"""
from __future__ import annotations

import os
import re
import signal
import socket
import time
import weakref

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1280, 800)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ARGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu",
    "--disable-background-networking", "--disable-component-update", "--no-first-run",
    "--disable-sync", "--disable-quic", "--no-default-browser-check", "--disable-default-apps",
    "--disable-extensions", "--disable-breakpad", "--disable-domain-reliability", "--no-pings",
    "--disable-client-side-phishing-detection", "--metrics-recording-only", "--media-router=0",
    # NetworkTimeServiceQuerying asks a time server even with background
    # networking off.
    "--disable-features=MediaRouter,DialMediaRouteProvider,OptimizationHints,Translate,"
    "AutofillServerCommunication,CertificateTransparencyComponentUpdater,NetworkTimeServiceQuerying",
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
    # DNS never leaves the machine: every name but localhost fails to resolve.
    # The rules apply to the proxy's address too, hence 127.* excluded.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.*",
    # IP literals skip the resolver: what is not loopback goes to the proxy.
    # "<-loopback>" drops the implicit bypass, which covers link-local too.
    "--proxy-bypass-list=<-loopback>;127.0.0.0/8;localhost",
)

_screenshot_dirs: "weakref.WeakKeyDictionary[webdriver.Chrome, str]" = weakref.WeakKeyDictionary()


def chromium(tmp_dir, screenshots_dir=None, page_load_timeout: float = 30, proxy: str | None = None) -> "Chromium":
    """A browser to use as `with chromium(tmp_path) as driver:`; see Chromium."""
    return Chromium(tmp_dir, screenshots_dir=screenshots_dir, page_load_timeout=page_load_timeout, proxy=proxy)


class Chromium:
    """One headless Chromium and its chromedriver. Entering starts them and
    gives the WebDriver; leaving quits them. `proxy` ("127.0.x.y:port") is
    where non-loopback requests go; by default a port that refuses them.
    `screenshots_dir` is where screenshot() writes for this driver."""

    def __init__(self, tmp_dir, screenshots_dir=None, page_load_timeout: float = 30, proxy: str | None = None):
        self.tmp_dir = os.path.abspath(str(tmp_dir))
        self.screenshots_dir = str(screenshots_dir) if screenshots_dir else None
        self.page_load_timeout = page_load_timeout
        self.proxy = proxy
        self.user_data_dir = ""
        self.driver: webdriver.Chrome | None = None
        self.pids: dict[int, int] = {}          # pid -> start time, as of quit()
        self._service: Service | None = None
        self._refuser: socket.socket | None = None

    def __enter__(self) -> webdriver.Chrome:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.quit()

    def start(self) -> webdriver.Chrome:
        if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
            raise RuntimeError(f"{CHROMIUM} or {CHROMEDRIVER} is missing: run scripts/setup.sh "
                               "(Debian packages chromium chromium-driver)")
        os.makedirs(self.tmp_dir, exist_ok=True)
        base = _fresh_dir(self.tmp_dir, "chromium")
        self.user_data_dir = os.path.join(base, "profile")
        home = os.path.join(base, "home")
        os.makedirs(home)
        proxy = self.proxy
        if proxy is None:
            # Bound and never listening: a connection to it is refused at once.
            self._refuser = socket.socket()
            self._refuser.bind(("127.0.0.1", 0))
            proxy = "127.0.0.1:%d" % self._refuser.getsockname()[1]
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ARGS:
            options.add_argument(arg)
        options.add_argument(f"--proxy-server=http://{proxy}")
        options.add_argument(f"--user-data-dir={self.user_data_dir}")
        options.add_argument("--window-size=%d,%d" % WINDOW)
        # HOME and the XDG folders keep NSS's database and caches out of the real home.
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        env.update(HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"),
                   XDG_CACHE_HOME=os.path.join(home, ".cache"))
        # A session of its own: every process chromedriver starts is found by
        # its session id, even one whose parent has died.
        self._service = Service(CHROMEDRIVER, log_output=os.path.join(base, "chromedriver.log"),
                                env=env, popen_kw={"start_new_session": True})
        try:
            self.driver = webdriver.Chrome(service=self._service, options=options)
            self.driver.set_page_load_timeout(self.page_load_timeout)
            self.driver.set_window_size(*WINDOW)
        except BaseException:
            self.quit()
            raise
        if self.screenshots_dir:
            _screenshot_dirs[self.driver] = self.screenshots_dir
        return self.driver

    def quit(self) -> None:
        """Quit the browser and chromedriver; kill by PID whatever of theirs is
        still running 10 s later."""
        root = self._service.process.pid if self._service and self._service.process else None
        if root is not None:
            self.pids = _family(root)
        try:
            if self.driver is not None:
                self.driver.quit()
            elif self._service is not None:
                self._service.stop()
        finally:
            self.driver = None
            if root is not None:
                self.pids.update(_family(root))
                if not _wait_gone(self.pids, 10):
                    for pid in self.survivors():
                        _kill(pid, self.pids[pid])
                    _wait_gone(self.pids, 10)
            if self._refuser is not None:
                self._refuser.close()
                self._refuser = None

    def survivors(self) -> list[int]:
        """The browser's processes still running (zombies are not)."""
        return sorted(pid for pid, start in self.pids.items() if _running(pid, start))


def text_of(driver, css: str) -> str:
    """The visible text of the first element matching `css`."""
    from selenium.webdriver.common.by import By
    return driver.find_element(By.CSS_SELECTOR, css).text


def screenshots_dir() -> str:
    """$KEEL_SCREENSHOTS, else build/screenshots in the repository."""
    return os.environ.get("KEEL_SCREENSHOTS") or os.path.join(REPO_ROOT, "build", "screenshots")


def screenshot(driver, name: str, directory: str | None = None) -> str:
    """Save the viewport as NAME.png in `directory`, else the driver's
    screenshots_dir, else screenshots_dir(); returns the path."""
    directory = directory or _screenshot_dirs.get(driver) or screenshots_dir()
    os.makedirs(directory, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "screenshot"
    path = os.path.join(directory, stem if stem.endswith(".png") else stem + ".png")
    if not driver.save_screenshot(path):
        raise RuntimeError(f"the browser saved no screenshot to {path}")
    return path


def _fresh_dir(parent: str, prefix: str) -> str:
    for n in range(1000):
        path = os.path.join(parent, f"{prefix}-{n}")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"no free {prefix}-N folder in {parent}")


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, session id, start time) of a process, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[3]), int(fields[19])


def _family(root: int) -> dict[int, int]:
    """pid -> start time of `root`, its descendants and its session's members."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                table[int(entry)] = st
    found = {pid for pid, (_, _, sid, _) in table.items() if sid == root}
    if root in table:
        found.add(root)
    grew = True
    while grew:
        grew = False
        for pid, (_, ppid, _, _) in table.items():
            if ppid in found and pid not in found:
                found.add(pid)
                grew = True
    return {pid: table[pid][3] for pid in found}


def _running(pid: int, start: int) -> bool:
    st = _stat(pid)
    return st is not None and st[3] == start and st[0] not in ("Z", "X")


def _wait_gone(pids: dict[int, int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_running(pid, start) for pid, start in pids.items()):
            return True
        time.sleep(0.1)
    return False


def _kill(pid: int, start: int) -> None:
    # Checked just before: a PID that has been reused since is left alone.
    if _running(pid, start):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
