"""A real browser on a real `streamlit run app.py`: used by tests/test_browser.py and for screenshots.
`python tests/browser.py` prints the chromium the tests use (scripts/test.sh asks it).

    with streamlit_server() as url:
        with chromium_page(url + "/Explore") as page:
            ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def find_chromium() -> str | None:
    """The chromium the browser tests drive: `SPADE_VIZ_CHROMIUM` if set, else `chromium` on PATH.
    scripts/test.sh asks this same function (`python tests/browser.py`), so the two cannot disagree."""
    return shutil.which(os.environ.get("SPADE_VIZ_CHROMIUM") or "chromium")  # a path, or a name on PATH


CHROMIUM = find_chromium() or os.environ.get("SPADE_VIZ_CHROMIUM") or "chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def chromium_available() -> bool:
    """Whether the browser tests can run. Where a chromium is required (scripts/test.sh installed one and
    sets SPADE_VIZ_REQUIRE_BROWSER=1) a missing one is an error, so the run fails instead of skipping."""
    found = find_chromium() is not None
    if not found and os.environ.get("SPADE_VIZ_REQUIRE_BROWSER") == "1":
        raise RuntimeError(f"SPADE_VIZ_REQUIRE_BROWSER=1 but no chromium at {CHROMIUM} (SPADE_VIZ_CHROMIUM, "
                           "else `chromium` on PATH): the browser tests would all skip")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_command(port: int, warm: bool) -> list[str]:
    """The README's start command (`python -m spade_viz app`: the model loaded and a first prompt
    analysed before the server answers), or with `warm` False a bare `streamlit run app.py`."""
    where = ["--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none"]
    if warm:
        return [sys.executable, "-m", "spade_viz", "app", *where]
    streamlit = Path(sys.executable).with_name("streamlit")
    return [str(streamlit) if streamlit.exists() else shutil.which("streamlit") or "streamlit", "run", "app.py",
            "--server.headless", "true", "--browser.gatherUsageStats", "false", *where]


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def streamlit_server(timeout: float = 90.0, log_path: Path | None = None, warm: bool = True):
    """Start the app on a free localhost port (`_server_command`); yield its URL once it answers; stop it
    afterwards."""
    port = free_port()
    cmd = _server_command(port, warm)
    log = open(log_path or os.devnull, "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {proc.returncode} (log: {log_path})")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not start within {timeout:.0f} s (log: {log_path})")
            time.sleep(0.3)
        yield url
    finally:
        _stop(proc)
        log.close()


@contextlib.contextmanager
def warm_server(timeout: float = 300.0, env: dict | None = None, log_path: Path | None = None):
    """Start the README's server, `python -m spade_viz app` (model loaded and a first prompt analysed
    before it serves), on a free localhost port; yield (URL, process) once it prints that it is ready;
    stop it afterwards. Its output goes to `log_path`."""
    port = free_port()
    cmd = _server_command(port, warm=True)
    log_path = log_path or Path(os.devnull)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env or dict(os.environ))
    try:
        deadline = time.monotonic() + timeout
        while log_path == Path(os.devnull) or "spade-viz is ready" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {proc.returncode} (log: {log_path})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server was not ready within {timeout:.0f} s (log: {log_path})")
            if log_path == Path(os.devnull):
                with contextlib.suppress(OSError), urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/_stcore/health", timeout=2):
                    break
            time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        _stop(proc)


@contextlib.contextmanager
def chromium_browser():
    """A headless Debian chromium (Playwright drives it); `new_page()` on it opens a fresh session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 800):
    """A headless Debian chromium page of the given viewport."""
    with chromium_browser() as browser:
        yield browser.new_page(viewport={"width": width, "height": height})


if __name__ == "__main__":  # scripts/test.sh: print the chromium the tests will use; exit 1 if there is none
    found = find_chromium()
    print(found or "")
    sys.exit(0 if found else 1)
