"""The container (Dockerfile, compose.yaml, scripts/container.sh): its parts agree, and the real image,
built and run with no network, serves the Explore page's final answer to chromium.

The slow test runs `bash scripts/container.sh test` as the README gives it. As root (CI) it never
skips: the script starts dockerd and builds the base image from Debian's packages when Docker Hub
is out of reach, and fails with its reason when it cannot. Elsewhere it needs a running Docker.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = "/etc/spade-viz/serve.toml"


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_image_runs_unprivileged_server_mode_with_a_health_check():
    final = _dockerfile().rsplit("\nFROM ", 1)[1]  # the image's own stage
    assert re.search(r"^USER spade$", final, re.M)
    assert re.search(r"^EXPOSE 8501$", final, re.M)
    assert "http://127.0.0.1:8501/_stcore/health" in final
    assert "SPADE_VIZ_SERVE=1" in final and SETTINGS in final and "/models" in final
    assert "--server.port 8501" in final and "--server.address 0.0.0.0" in final
    assert "$(python -m spade_viz.serve)" in final  # Streamlit's limits follow the settings
    # no compilers or venv tooling in the image: python3 alone comes from apt in the shared base
    assert "build-essential" not in _dockerfile() and "gcc" not in _dockerfile()


def test_compose_and_script_mount_what_the_image_reads():
    service = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["spade-viz"]
    assert service["image"] == "spade-viz"
    assert service["ports"] == ["8501:8501"]
    assert service["restart"] == "unless-stopped"
    assert service["mem_limit"] == "3g"
    assert service["environment"]["SPADE_VIZ_SERVE"] == SETTINGS
    mounts = {m["target"]: m for m in service["volumes"]}
    assert mounts[SETTINGS]["source"] == "./serve.toml" and mounts[SETTINGS]["read_only"]
    assert mounts["/models"]["source"] == "./models" and mounts["/models"]["read_only"]
    script = (ROOT / "scripts" / "container.sh").read_text()
    assert f'"$PWD/serve.toml:{SETTINGS}:ro"' in script and '"$PWD/models:/models:ro"' in script
    assert 'IMAGE="${SPADE_VIZ_IMAGE:-spade-viz}"' in script


def test_readme_gives_the_commands_the_test_runs():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run it in a container", 1)[1].split("\n## ", 1)[0]
    for command in ("bash scripts/container.sh build", "bash scripts/container.sh run",
                    "bash scripts/container.sh test"):
        assert command in section


def _docker_usable() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.container
def test_container_serves_the_explore_page():
    if os.geteuid() != 0 and not _docker_usable():
        pytest.skip("Docker is not running and only root may start it here")
    proc = subprocess.run(["bash", "scripts/container.sh", "test"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHON": sys.executable}, timeout=3000)
    out = proc.stdout + proc.stderr
    (ROOT / "test-artifacts").mkdir(exist_ok=True)
    (ROOT / "test-artifacts" / "container-test.log").write_text(out)  # the build, health and test times
    assert proc.returncode == 0, out[-4000:]
    assert "Final answer: ␣Berlin" in out, out
    assert "runs as spade (uid 10001)" in out, out
    assert re.search(r"healthy \(HEALTHCHECK\) after [0-9.]+ s", out), out
    assert "container test passed" in out, out
    if _docker_usable():  # stopped and removed: nothing left behind but the image
        left = subprocess.run(["docker", "ps", "-aq", "--filter", "name=^spade-viz-test$"], capture_output=True,
                              text=True)
        assert left.stdout.strip() == ""
