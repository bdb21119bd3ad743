"""The tree is ruff-clean (rules in pyproject.toml), and the package's pins agree with requirements.txt."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_check_is_clean():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"ruff check . found problems:\n{done.stdout}{done.stderr}"


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def test_package_dependencies_are_the_pinned_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    required = _pins((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    declared = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    assert declared["torch"] == "2.13.0"  # a bare torch pulls a multi-GB CUDA build
    for name, version in declared.items():
        assert required.get(name) == version, (
            f"{name}: pyproject.toml pins {version}, requirements.txt {required.get(name)}")
