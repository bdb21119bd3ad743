"""One chromium lookup for scripts/test.sh and the browser tests, and a run that fails, not skips,
when a chromium is required and cannot be found."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import browser

HERE = Path(__file__).resolve().parent


@pytest.fixture
def fake_chromium(tmp_path) -> Path:
    path = tmp_path / "bin" / "chromium"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def _ask_script(env: dict) -> subprocess.CompletedProcess:
    """What scripts/test.sh runs to find chromium."""
    return subprocess.run([sys.executable, str(HERE / "browser.py")], env=env, capture_output=True, text=True,
                          timeout=60)


def test_named_chromium_wins_and_the_script_sees_the_same(fake_chromium, monkeypatch):
    monkeypatch.setenv("SPADE_VIZ_CHROMIUM", str(fake_chromium))
    monkeypatch.setenv("PATH", "/nonexistent")
    assert browser.find_chromium() == str(fake_chromium)
    done = _ask_script(dict(os.environ))
    assert done.returncode == 0 and done.stdout.strip() == str(fake_chromium)


def test_chromium_on_path_is_found(fake_chromium, monkeypatch):
    monkeypatch.delenv("SPADE_VIZ_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(fake_chromium.parent))
    assert browser.find_chromium() == str(fake_chromium)
    assert browser.chromium_available()


def test_missing_chromium_skips_unless_required(tmp_path, monkeypatch):
    monkeypatch.setenv("SPADE_VIZ_CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.delenv("SPADE_VIZ_REQUIRE_BROWSER", raising=False)
    assert browser.find_chromium() is None and not browser.chromium_available()
    done = _ask_script(dict(os.environ))
    assert done.returncode == 1 and done.stdout.strip() == ""
    monkeypatch.setenv("SPADE_VIZ_REQUIRE_BROWSER", "1")
    with pytest.raises(RuntimeError, match="SPADE_VIZ_REQUIRE_BROWSER=1 but no chromium"):
        browser.chromium_available()


@pytest.mark.slow  # a pytest in a subprocess: about 10 s
def test_required_browser_tests_fail_at_collection_without_chromium(tmp_path):
    """The browser test modules decide skip-or-run when collected: a required, missing chromium is an error there."""
    env = {**os.environ, "SPADE_VIZ_CHROMIUM": str(tmp_path / "no-chromium"), "SPADE_VIZ_REQUIRE_BROWSER": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                           str(HERE / "test_browser_sessions.py")], cwd=HERE.parent, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode != 0 and "SPADE_VIZ_REQUIRE_BROWSER=1 but no chromium" in done.stdout, done.stdout[-2000:]
