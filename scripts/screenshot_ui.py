"""Screenshot the Drill Progress page of a running Airflow api-server with headless Chromium.

    .venv/bin/python scripts/screenshot_ui.py --url http://127.0.0.1:8080 --user admin --password admin \
        --out tests/_artifacts/drill_progress.png [--dom tests/_artifacts/drill_progress.html]

Logs in the way the Airflow UI does (POST /auth/token with the user's password), then opens the
page through its login bridge, `/drill-progress/login#token=...`: the token rides in the URL
fragment, which is never sent to a server or written to access logs, and the bridge trades it for
Airflow's own `_token` cookie. The bridge is off unless the api-server runs with the Airflow
setting `[drill_progress] ui_login_bridge = True` (AIRFLOW__DRILL_PROGRESS__UI_LOGIN_BRIDGE=true);
the account needs read access to the page's DAGs. Needs Debian's `chromium` package
(/usr/bin/chromium). Also used by tests/ui/test_page_browser.py.

`--lookup NUMBER` types the number into the page's User lookup (through the DevTools protocol:
focus, insert text, click Look up, as a user would), waits for the answer and screenshots the page
from the lookup down; the account also needs read access to the connection drill_progress_db.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
PAGE_PATH = "/drill-progress/"


def chromium_binary() -> str | None:
    """Debian's chromium (or $CHROMIUM), if installed."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def get_token(base_url: str, username: str, password: str, timeout: float = 30) -> str:
    """An Airflow JWT from the api-server's auth manager (POST /auth/token, as the UI's login does)."""
    request = urllib.request.Request(  # noqa: S310 - a URL the operator gives, http(s) only
        base_url.rstrip("/") + "/auth/token",
        data=json.dumps({"username": username, "password": password}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())["access_token"]


def login_url(base_url: str, token: str, next_path: str | None = None) -> str:
    """The page's login bridge; `next_path` (same-origin path) opens instead of the page itself,
    e.g. /plugin/drill-progress for the page embedded in Airflow's own UI."""
    fragment = urllib.parse.urlencode({"token": token, **({"next": next_path} if next_path else {})})
    return f"{base_url.rstrip('/')}{PAGE_PATH}login#{fragment}"


def _chromium_command(profile: str, window: tuple[int, int], *extra: str) -> list[str]:
    """Headless Chromium with the project's flags in the fresh profile `profile`."""
    binary = chromium_binary()
    if binary is None:
        raise RuntimeError("chromium not found: apt-get install -y chromium (or set $CHROMIUM)")
    return [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={window[0]},{window[1]}", *extra]


def run_chromium(
    url: str, *extra: str, window: tuple[int, int] = (1400, 1000), budget_ms: int = 20000, timeout: float = 120
) -> subprocess.CompletedProcess:
    """One headless Chromium run in a fresh profile (no cookies carried over between runs)."""
    with tempfile.TemporaryDirectory(prefix="drill-chromium-") as profile:
        cmd = _chromium_command(profile, window, f"--virtual-time-budget={budget_ms}", *extra, url)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def screenshot(
    base_url: str, token: str, out: Path, window: tuple[int, int] = (1400, 1000), next_path: str | None = None
) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()
    result = run_chromium(login_url(base_url, token, next_path), f"--screenshot={out}", window=window)
    if not out.exists():
        raise RuntimeError(f"chromium wrote no screenshot (exit {result.returncode}): {result.stderr[-2000:]}")
    return out


def dump_dom(base_url: str, token: str, next_path: str | None = None) -> str:
    """The page's DOM after its scripts ran (login bridge -> page -> JSON fetches -> rendering)."""
    result = run_chromium(login_url(base_url, token, next_path), "--dump-dom")
    if result.returncode != 0:
        raise RuntimeError(f"chromium failed (exit {result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


class DevTools:
    """A minimal DevTools-protocol client of one page (websockets' sync client)."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self._ws = connect(ws_url, max_size=64 * 2**20, open_timeout=30)
        self._ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        call_id = next(self._ids)
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise TimeoutError(f"not true after {timeout}s: {expression}")

    def close(self) -> None:
        self._ws.close()


@contextlib.contextmanager
def devtools_page(url: str, window: tuple[int, int] = (1400, 1000), timeout: float = 60):
    """Headless Chromium (fresh profile) with the DevTools protocol on a free port, on `url`."""
    with tempfile.TemporaryDirectory(prefix="drill-chromium-") as profile:
        cmd = _chromium_command(
            profile, window, "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", url
        )
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        page = None
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + timeout
            while not (port_file.exists() and port_file.read_text().strip()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chromium exposed no DevTools port (exit {proc.poll()})")
                time.sleep(0.1)
            port = port_file.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                targets = json.loads(response.read())
            page = DevTools(next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page"))
            yield page
        finally:
            if page is not None:
                page.close()
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def lookup(
    base_url: str, token: str, phone_numbers: list[str], out: Path | None = None, window: tuple[int, int] = (1400, 1000)
) -> list[str]:
    """Sign in through the login bridge, wait for the page, then type each number into the User
    lookup in turn and wait for its answer. Returns the lookup section's HTML after each answer;
    screenshots the page from the lookup down after the last one (full height) to `out`."""
    answers = []
    with devtools_page(login_url(base_url, token), window) as page:
        page.wait_for("document.body && document.body.getAttribute('data-ready') === 'true'")
        for number in phone_numbers:
            page.evaluate("document.getElementById('lookup-result').removeAttribute('data-state')")
            page.evaluate("document.getElementById('lookup-phone').focus()")
            page.call("Input.insertText", text=number)
            page.evaluate("document.getElementById('lookup-submit').click()")
            page.wait_for(
                "['found', 'not-found', 'error'].includes(document.getElementById('lookup-result').dataset.state)"
            )
            answers.append(page.evaluate("document.getElementById('lookup').outerHTML"))
        if out is not None:
            top, height = page.evaluate(
                "(() => { const r = document.getElementById('lookup').getBoundingClientRect();"
                " return [r.top + scrollY, r.height]; })()"
            )
            shot = page.call(
                "Page.captureScreenshot",
                format="png",
                captureBeyondViewport=True,
                clip={"x": 0, "y": max(0, top - 16), "width": window[0], "height": height + 32, "scale": 1},
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(base64.b64decode(shot["data"]))
    return answers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the api-server's base URL")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default=os.environ.get("AIRFLOW_UI_PASSWORD", "admin"))
    parser.add_argument("--out", type=Path, default=Path("tests/_artifacts/drill_progress.png"))
    parser.add_argument("--dom", type=Path, help="also write the rendered DOM here")
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument(
        "--in-airflow-ui",
        action="store_true",
        help="open the page inside Airflow's UI (/plugin/drill-progress) instead of on its own",
    )
    parser.add_argument("--lookup", metavar="NUMBER", help="type this phone number into the User lookup")
    args = parser.parse_args(argv)
    token = get_token(args.url, args.user, args.password)
    if args.lookup:
        lookup(args.url, token, [args.lookup], args.out, window=(1400, args.height))
        print(args.out)
        return 0
    next_path = "/plugin/drill-progress" if args.in_airflow_ui else None
    print(screenshot(args.url, token, args.out, window=(1400, args.height), next_path=next_path))
    if args.dom:
        args.dom.parent.mkdir(parents=True, exist_ok=True)
        args.dom.write_text(dump_dom(args.url, token, next_path))
        print(args.dom)
    return 0


if __name__ == "__main__":
    sys.exit(main())
