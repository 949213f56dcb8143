"""Headless Chromium driven through the Chrome DevTools protocol over a pipe (`--remote-debugging-pipe`: JSON
messages ended by NUL on fds 3 and 4), so the tests need no websocket client and no browser download: Debian's
`chromium`, installed by .ci/chromium when missing.

`Browser.open(path)` loads a page and records what the tests assert on: console errors, uncaught exceptions,
and every request the page makes (a request to anything but `data:`/`file:`/`about:` is a network request)."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SETUP = Path(__file__).resolve().parents[2] / ".ci" / "chromium"
#: schemes that never leave the machine
LOCAL_SCHEMES = ("data:", "file:", "about:", "blob:", "chrome:", "devtools:")


def find() -> str | None:
    for name in ("chromium", "chromium-browser"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


def ensure() -> tuple[str | None, str]:
    """The browser's path, installing it with the project's set-up script when missing; (None, why) otherwise."""
    exe = find()
    if exe:
        return exe, ""
    done = subprocess.run([str(SETUP)], capture_output=True, text=True, check=False, timeout=900)
    exe = find()
    return (exe, "") if exe else (None, (done.stderr or done.stdout).strip() or "chromium could not be installed")


@dataclass
class Page:
    """A loaded page: evaluate JS, take a screenshot; what it logged and requested so far."""

    browser: Browser
    session: str
    target: str
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def eval(self, expression: str) -> Any:
        r = self.browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, self.session)
        if "exceptionDetails" in r:
            raise AssertionError(f"JS error in {expression!r}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def viewport(self, width: int, height: int, *, mobile: bool = False) -> None:
        self.browser.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
            self.session,
        )

    def screenshot(self, path: Path, width: int = 1200, height: int = 900) -> Path:
        self.viewport(width, height)
        r = self.browser.call("Page.captureScreenshot", {"format": "png"}, self.session)
        path.write_bytes(base64.b64decode(r["data"]))
        return path

    @property
    def network(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(LOCAL_SCHEMES)]


class Browser:
    def __init__(self, exe: str) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="vidpipe-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def fds() -> None:  # in the child: the protocol's fds 3 (commands in) and 4 (replies out)
            r, w = os.dup(to_browser_r), os.dup(from_browser_w)  # above 4, so neither dup2 overwrites the other
            os.dup2(r, 3)
            os.dup2(w, 4)

        args = [exe, "--headless=new", "--remote-debugging-pipe", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--mute-audio",
                f"--user-data-dir={self._profile.name}", "about:blank"]  # fmt: skip
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.proc = subprocess.Popen(
            args, preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._id = 0
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.pages: dict[str, Page] = {}
        self.loaded: set[str] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            chunk = os.read(self._from_browser, 1 << 16)
            if not chunk:
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                self._dispatch(json.loads(raw))

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "id" in msg:
            with self._lock:
                q = self._replies.get(msg["id"])
            if q is not None:
                q.put(msg)
            return
        page = self.pages.get(msg.get("sessionId", ""))
        method, params = msg.get("method", ""), msg.get("params", {})
        if page is None:
            return
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            page.console_errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            page.console_errors.append(str(params["exceptionDetails"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            page.console_errors.append(params["entry"]["text"])
        elif method == "Network.requestWillBeSent":
            page.requests.append(params["request"]["url"])
        elif method == "Page.loadEventFired":
            self.loaded.add(msg["sessionId"])

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        with self._lock:
            self._id += 1
            n = self._id
            q: queue.Queue[dict[str, Any]] = queue.Queue()
            self._replies[n] = q
        msg: dict[str, Any] = {"id": n, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        try:
            reply = q.get(timeout=120)
        except queue.Empty:
            raise AssertionError(f"chromium did not answer {method}") from None
        if "error" in reply:
            raise AssertionError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open(self, path: Path, timeout: float = 120) -> Page:
        """`path` in a new tab, the one open: the tabs of earlier tests are closed first (an idle report page
        left open kept a renderer busy at ~90 % of a core for the rest of the suite)."""
        for old in list(self.pages.values()):
            with contextlib.suppress(AssertionError):
                self.call("Target.closeTarget", {"targetId": old.target})
        self.pages.clear()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = self.pages[session] = Page(self, session, target)
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable", {}, session)
        self.call("Page.navigate", {"url": path.resolve().as_uri()}, session)
        end = time.monotonic() + timeout
        while session not in self.loaded:
            if time.monotonic() > end:
                raise AssertionError(f"{path} did not load in {timeout} s")
            time.sleep(0.05)
        return page

    def close(self) -> None:
        with contextlib.suppress(AssertionError, OSError):  # it may be gone already; the wait below tells
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)
        self._profile.cleanup()
