"""Headless Chromium for page tests: open a static page from file://, run a few scripted actions, read the
images' state and the console, take a screenshot.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: requests on fd 3,
replies on fd 4, NUL-terminated JSON), so no websocket library or driver download is needed. Tests that
use it are skipped when no Chromium binary is found (CI installs Debian's `chromium` package).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def find_chromium() -> str | None:
    explicit = os.environ.get("CFBENCH_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


class DevTools:
    """Minimal Chrome DevTools protocol client over --remote-debugging-pipe."""

    def __init__(self, chromium: str, profile: Path):
        def above_stdio(fd: int) -> int:  # keep our ends away from 3 and 4, which the child needs
            moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
            os.close(fd)
            return moved

        to_browser_read, self.to_browser = map(above_stdio, os.pipe())
        self.from_browser, from_browser_write = map(above_stdio, os.pipe())

        def wire_pipes() -> None:
            os.dup2(to_browser_read, 3)
            os.dup2(from_browser_write, 4)

        command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--no-first-run", "--no-default-browser-check", "--remote-debugging-pipe",
                   f"--user-data-dir={profile}", "about:blank"]
        self.process = subprocess.Popen(command, close_fds=False, preexec_fn=wire_pipes,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser_read)
        os.close(from_browser_write)
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no answer from Chromium")
            ready, _, _ = select.select([self.from_browser], [], [], remaining)
            if ready:
                chunk = os.read(self.from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.to_browser)
        os.close(self.from_browser)


def console_problems(events: list[dict]) -> list[str]:
    problems = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
            problems.append(" ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            problems.append(params.get("exceptionDetails", {}).get("text", "exception"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            problems.append(f"{entry.get('text')} {entry.get('url', '')}")
    return problems


def render(page: Path, profile: Path, actions: list[str] = (), width: int = 1400,
           height: int = 900, url_suffix: str = "") -> tuple[list, list[str], bytes]:
    """Open page from file:// in headless Chromium: per <img> [src, complete, naturalWidth, naturalHeight],
    the console / log problems, and a width x height screenshot (PNG bytes). ``actions``: JavaScript
    expressions run in order after the load (clicks, filter choices), before the images are read;
    ``url_suffix``: appended to the file URL (a "#fragment"). ``render.rects``: each image's box, and
    ``render.values``: what each action returned."""
    browser = DevTools(find_chromium(), profile)
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page.enable", "Runtime.enable", "Log.enable"):
            browser.call(domain, session=session)
        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.call("Page.navigate", {"url": page.resolve().as_uri() + url_suffix}, session=session)
        browser.wait_for("Page.loadEventFired")
        render.values = [browser.call("Runtime.evaluate", {"expression": action, "returnByValue": True},
                                      session=session)["result"].get("value") for action in actions]
        check = ("JSON.stringify(Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, "
                 "i.naturalWidth, i.naturalHeight]))")
        images = json.loads(browser.call("Runtime.evaluate", {"expression": check, "returnByValue": True},
                                         session=session)["result"]["value"])
        where = ("JSON.stringify(Object.fromEntries(Array.from(document.images).map(i => { const r = "
                 "i.getBoundingClientRect(); return [i.getAttribute('src'), [r.x, r.y, r.width, r.height]]; })))")
        render.rects = json.loads(browser.call("Runtime.evaluate", {"expression": where, "returnByValue": True},
                                               session=session)["result"]["value"])
        screenshot = base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"}, session=session)["data"])
        browser.call("Runtime.evaluate", {"expression": "1"}, session=session)  # flush pending log events
    finally:
        browser.close()
    return images, console_problems(browser.events), screenshot
