"""Open a local HTML file in headless Chromium (Debian's `chromium`) over the DevTools protocol and report
what a reader would see: the console errors (console.error, uncaught exceptions, failed loads), each
<img>'s decoded size, and a screenshot. websocket-client speaks the protocol; nothing else is needed.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


@dataclass
class PageCheck:
    console_errors: list[str]
    images: list[dict]  # {"alt", "complete", "naturalWidth", "naturalHeight"} per <img>
    screenshot: bytes  # PNG of the first screenful


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def check_page(html: Path, timeout_s: float = 30.0, width: int = 1200, height: int = 1400) -> PageCheck:
    import websocket  # websocket-client (the dev extra)

    chromium = find_chromium()
    assert chromium is not None, "no chromium on PATH"
    with tempfile.TemporaryDirectory(prefix="seqlm-chromium-") as profile:
        command = [
            chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--remote-debugging-port=0", "--remote-allow-origins=*",
            f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank",
        ]  # fmt: skip
        browser = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + timeout_s
            port = _devtools_port(Path(profile), browser, deadline)
            page = _first_page(port, deadline)
            socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout_s, suppress_origin=True)
            try:
                return _inspect(_Session(socket, time.monotonic() + timeout_s), html)
            finally:
                socket.close()
        finally:
            browser.terminate()
            try:
                browser.wait(timeout=10)
            except subprocess.TimeoutExpired:
                browser.kill()
                browser.wait()


class _Session:
    """Numbered DevTools commands and the events that arrive between their answers."""

    def __init__(self, socket, deadline: float):
        self.socket, self.deadline, self.next_id, self.events = socket, deadline, 0, []

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = self._receive()
            if message.get("id") == self.next_id:
                assert "error" not in message, f"{method}: {message['error']}"
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str) -> None:
        while not any(event.get("method") == method for event in self.events):
            self.events.append(self._receive())

    def _receive(self) -> dict:
        assert time.monotonic() < self.deadline, "chromium did not answer in time"
        return json.loads(self.socket.recv())


def _inspect(session: _Session, html: Path) -> PageCheck:
    for domain in ("Page", "Runtime", "Log"):
        session.call(f"{domain}.enable")
    session.call("Page.navigate", url=html.resolve().as_uri())
    session.wait_for("Page.loadEventFired")
    images = session.call(
        "Runtime.evaluate",
        expression="Promise.all(Array.from(document.images, i => i.decode().catch(() => null))).then(() => "
        "JSON.stringify(Array.from(document.images, i => ({alt: i.alt, complete: i.complete, "
        "naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight}))))",
        awaitPromise=True,
        returnByValue=True,
    )
    shot = session.call("Page.captureScreenshot", format="png")
    return PageCheck(_errors(session.events), json.loads(images["result"]["value"]), base64.b64decode(shot["data"]))


def _errors(events: list[dict]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append(" ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            errors.append(params.get("exceptionDetails", {}).get("text", "exception"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append(params["entry"].get("text", ""))
    return errors


def _first_page(port: int, deadline: float) -> dict:
    """The page target Chromium lists; it writes its port file a moment before it answers on it (refused
    connections then, seen on a loaded machine), and may list the page a moment after: asked again until the deadline."""
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=max(deadline - time.monotonic(), 1)) as response:
                pages = [target for target in json.load(response) if target.get("type") == "page"]
            if pages:
                return pages[0]
        except OSError:
            if time.monotonic() >= deadline:
                raise
        if time.monotonic() >= deadline:
            raise AssertionError("chromium listed no page in time")
        time.sleep(0.1)


def _devtools_port(profile: Path, browser: subprocess.Popen, deadline: float) -> int:
    """Chromium writes the port it chose (--remote-debugging-port=0) to DevToolsActivePort in its profile."""
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if browser.poll() is not None:
            raise AssertionError(f"chromium exited with {browser.returncode} before opening its DevTools port")
        if marker.is_file() and (lines := marker.read_text().splitlines()):
            return int(lines[0])
        time.sleep(0.05)
    raise AssertionError("chromium did not open its DevTools port in time")


def in_ci() -> bool:
    return bool(os.environ.get("CI"))
