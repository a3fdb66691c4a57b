"""The browser harness on its own, against a page served on 127.0.11.1: a
click runs the page's script, a screenshot is written, a host name that is
not loopback never reaches the network (it goes to the proxy, loopback does
not), and no chromium or chromedriver process outlives the browser."""
import contextlib
import http.server
import os
import threading

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By

from harness.browser import chromium, screenshot, screenshots_dir
from harness.wait import wait_for

PAGE = b"""<!doctype html>
<title>harness</title>
<p id="out">before</p>
<button id="go" onclick="document.getElementById('out').textContent = 'after ' + (1 + 1)">Go</button>
"""
OUTSIDE = "http://keel-outside.invalid/"


@contextlib.contextmanager
def serve(address, body):
    """An HTTP server on (address, free port) answering every GET with
    `body`; yields (base URL, the request targets it saw)."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((address, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{server.server_address[1]}/", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def processes_using(path):
    """PIDs of running processes whose command line names `path`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if path.encode() in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def assert_nothing_survives(browser):
    assert browser.pids, "no chromedriver/chromium process was seen"
    assert browser.survivors() == []
    assert processes_using(browser.user_data_dir) == []


@pytest.mark.slow
def test_click_changes_the_text_and_a_screenshot_is_written(tmp_path):
    browser = chromium(tmp_path)
    with serve("127.0.11.1", PAGE) as (url, _), browser as driver:
        driver.get(url)
        assert driver.find_element(By.ID, "out").text == "before"
        driver.find_element(By.ID, "go").click()
        wait_for(lambda: driver.find_element(By.ID, "out").text == "after 2", 10, what="the clicked text")
        path = screenshot(driver, "browser harness")
        assert os.path.dirname(path) == screenshots_dir() and path.endswith("browser-harness.png")
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert driver.get_window_size() == {"width": 1280, "height": 800}
        # The default proxy refuses, and nothing falls back to a direct
        # connection (that would fail name resolution instead).
        with pytest.raises(WebDriverException, match="ERR_PROXY_CONNECTION_FAILED"):
            driver.get(OUTSIDE)
    assert_nothing_survives(browser)


@pytest.mark.slow
def test_only_loopback_is_reached_directly(tmp_path):
    with serve("127.0.11.1", PAGE) as (url, direct), \
            serve("127.0.11.2", b"<p id='out'>proxied</p>") as (proxy_url, proxied):
        browser = chromium(tmp_path, screenshots_dir=tmp_path / "shots",
                           proxy=proxy_url[len("http://"):].rstrip("/"))
        with browser as driver:
            driver.get(url)
            driver.get(OUTSIDE)
            assert driver.find_element(By.ID, "out").text == "proxied"
            assert screenshot(driver, "proxied") == str(tmp_path / "shots" / "proxied.png")
        assert_nothing_survives(browser)
    assert direct and all(p.startswith("/") for p in direct)
    # Only the page asked for went out: no background request of the browser's.
    assert OUTSIDE in proxied and all(p.startswith(OUTSIDE) for p in proxied)


def test_screenshots_go_where_keel_screenshots_says(monkeypatch, tmp_path):
    monkeypatch.setenv("KEEL_SCREENSHOTS", str(tmp_path))
    assert screenshots_dir() == str(tmp_path)
    monkeypatch.delenv("KEEL_SCREENSHOTS")
    assert screenshots_dir().endswith(os.path.join("build", "screenshots"))
