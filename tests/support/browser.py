"""Headless Chromium through Selenium, and a server in a thread, for the browser tests.

The browser is the Debian package (`apt-get install -y chromium chromium-driver`), driven with its
own chromedriver, so nothing is downloaded. When it is missing the tests fail and say how to
install it: the README's test command installs it first."""
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

INSTALL = ("headless Chromium is needed for the browser tests: apt-get update && apt-get install -y chromium "
           "chromium-driver (the README's test command does this), or set CHROMIUM and CHROMEDRIVER to their paths")


def chrome(width: int = 1200, height: int = 900):
    binary = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (Path(binary).is_file() and Path(driver).is_file()):
        pytest.fail(INSTALL, pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is needed for the browser tests: pip install -e '.[test]'", pytrace=False)
    opts = Options()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A uvicorn server for `app` on 127.0.0.1, in a thread."""

    def __init__(self, app):
        import uvicorn
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the review server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def screenshot(driver, name: str) -> Path | None:
    """Save the page as docs/NAME.png when DATAENGINE_SCREENSHOTS names a folder (the README's pictures)."""
    folder = os.environ.get("DATAENGINE_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0)")
    driver.save_screenshot(str(path))
    return path
