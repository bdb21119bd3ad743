#!/usr/bin/env bash
# spade-viz in a container (README "Run it in a container"):
#   bash scripts/container.sh build   build the image `spade-viz` from the Dockerfile (BuildKit)
#   bash scripts/container.sh run     start it on http://localhost:8501, server mode; Ctrl-C stops it.
#                                     ./serve.toml and ./models are mounted when they exist.
#   bash scripts/container.sh test    build, run with no network, wait until healthy, see the Explore
#                                     page's final answer in chromium, then stop and remove the container
# Settings: SPADE_VIZ_IMAGE (spade-viz), SPADE_VIZ_PORT (8501), SPADE_VIZ_WHEELS (a folder of local
# wheels, e.g. the CPU torch wheel; default: pip's find-links when it is a folder), PYTHON (the one
# that drives chromium in `test`; default .venv/bin/python).
# When Docker is not running and this runs as root, it starts dockerd. When the Dockerfile's base image
# cannot be pulled (no Docker Hub), it is built from Debian's packages (debootstrap) under the same tag.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${SPADE_VIZ_IMAGE:-spade-viz}"
PORT="${SPADE_VIZ_PORT:-8501}"
WORK=build/container  # gitignored; also the only place the build context takes wheels from

die() { echo "container.sh: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# The Docker command line: BuildKit is needed, which a Docker 23+ client only has through buildx
# (Debian bookworm's docker.io, 20.10, has it built in).
pick_docker() {
  local cli version
  for cli in docker /usr/bin/docker; do
    command -v "$cli" >/dev/null 2>&1 || continue
    if "$cli" buildx version >/dev/null 2>&1; then DOCKER=$cli; return; fi
    version=$("$cli" --version | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')
    if [ -n "$version" ] && [ "$version" -lt 23 ]; then DOCKER=$cli; return; fi
  done
  die "no Docker client with BuildKit: install Docker (Debian: apt-get install docker.io) or the buildx plugin"
}

ensure_daemon() {
  pick_docker
  "$DOCKER" info >/dev/null 2>&1 && return
  command -v dockerd >/dev/null 2>&1 || die "Docker is not installed (Debian: apt-get install docker.io)"
  [ "$(id -u)" -eq 0 ] || die "Docker is not running and only root can start it (sudo dockerd &)"
  mkdir -p "$WORK"
  echo "starting dockerd (log: $WORK/dockerd.log)"
  setsid nohup dockerd >"$WORK/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 60); do
    "$DOCKER" info >/dev/null 2>&1 && return
    sleep 1
  done
  die "dockerd did not start within 60 s (log: $WORK/dockerd.log)"
}

# The Dockerfile's base image: pulled, or else built from Debian's packages under the same tag.
ensure_base() {
  local base suite root start
  base=$(awk '$1 == "FROM" { print $2; exit }' Dockerfile)
  "$DOCKER" image inspect "$base" >/dev/null 2>&1 && return
  "$DOCKER" pull -q "$base" >/dev/null 2>&1 && return
  case "$base" in
    debian:*-slim) suite=${base#debian:}; suite=${suite%-slim} ;;
    *) die "cannot pull the base image $base" ;;
  esac
  command -v debootstrap >/dev/null 2>&1 || die "cannot pull $base, and debootstrap (apt-get install debootstrap) is missing to build it"
  [ "$(id -u)" -eq 0 ] || die "cannot pull $base, and only root can build it with debootstrap"
  echo "cannot pull $base: building it from Debian's packages (debootstrap --variant=minbase $suite)"
  start=$(now)
  root=$(mktemp -d)
  debootstrap --variant=minbase "$suite" "$root" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 \
    || { rm -rf "$root"; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
  # The sources of Debian's own image: the release, its updates and security fixes.
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | "$DOCKER" import --change 'CMD ["bash"]' - "$base" >/dev/null
  rm -rf "$root"
  echo "built $base in $(since "$start") s"
}

# Local wheels for the build (the CPU torch wheel where pip finds it locally): copied into the context.
stage_wheels() {
  local from="${SPADE_VIZ_WHEELS:-${PIP_FIND_LINKS:-$(pip config get global.find-links 2>/dev/null || true)}}"
  rm -rf "$WORK/wheels"
  if [ -n "$from" ] && [ -d "$from" ] && compgen -G "$from/*.whl" >/dev/null; then
    mkdir -p "$WORK/wheels"
    cp -l "$from"/*.whl "$WORK/wheels/" 2>/dev/null || cp "$from"/*.whl "$WORK/wheels/"
  fi
}

build() {
  local start args=() ca=""
  ensure_daemon
  mkdir -p "$WORK"
  ensure_base
  stage_wheels
  [ -d "$WORK/wheels" ] && args+=(--build-arg TORCH_INDEX=)  # torch is among the local wheels
  # A package index behind its own certificate chain: the machine's CA bundle, as a secret.
  for ca in "${PIP_CERT:-}" "$(pip config get global.cert 2>/dev/null || true)" /etc/ssl/certs/ca-certificates.crt; do
    [ -n "$ca" ] && [ -f "$ca" ] && break
  done
  [ -n "$ca" ] && [ -f "$ca" ] && args+=(--secret "id=ca-certificates,src=$ca")
  start=$(now)
  DOCKER_BUILDKIT=1 "$DOCKER" build --network host --progress plain "${args[@]}" -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log" >&2; die "the build failed (log: $WORK/build.log)"; }
  echo "built $IMAGE in $(since "$start") s; size $("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" \
    | awk '{ printf "%.0f MB", $1 / 1e6 }')"
}

# `docker run` as `run` and `test` both use it: the port, the settings file and the models folder.
run_args() {
  RUN_ARGS=(-p "$PORT:8501")
  [ -f serve.toml ] && RUN_ARGS+=(-v "$PWD/serve.toml:/etc/spade-viz/serve.toml:ro")
  [ -d models ] && RUN_ARGS+=(-v "$PWD/models:/models:ro")
  return 0
}

run() {
  ensure_daemon
  run_args
  echo "http://localhost:$PORT (Ctrl-C stops it)"
  exec "$DOCKER" run --rm --init "${RUN_ARGS[@]}" "$IMAGE"
}

NAME=spade-viz-test
NETWORK=spade-viz-offline

cleanup() {
  "$DOCKER" rm -f "$NAME" >/dev/null 2>&1 || true
  "$DOCKER" network rm "$NETWORK" >/dev/null 2>&1 || true
}

test_container() {
  local start ip health="" answered="" url python="${PYTHON:-.venv/bin/python}" uid
  [ -x "$python" ] || die "no Python to drive chromium: run scripts/setup.sh or set PYTHON"
  start=$(now)
  build
  cleanup
  trap cleanup EXIT
  # No network but the host's: an internal network has no route out, so nothing is fetched at run time.
  "$DOCKER" network create --internal "$NETWORK" >/dev/null
  run_args
  local started
  started=$(now)
  "$DOCKER" run -d --init --name "$NAME" --network "$NETWORK" "${RUN_ARGS[@]}" "$IMAGE" >/dev/null
  ip=$("$DOCKER" inspect -f "{{(index .NetworkSettings.Networks \"$NETWORK\").IPAddress}}" "$NAME")
  url="http://$ip:8501"
  # Streamlit answers its health endpoint first; Docker's HEALTHCHECK (every 5 s) then says healthy.
  for _ in $(seq 300); do
    if [ -z "$answered" ] && "$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" \
        "$url/_stcore/health" 2>/dev/null; then
      answered=$(since "$started")
    fi
    health=$("$DOCKER" inspect -f '{{.State.Health.Status}}' "$NAME" 2>/dev/null || echo gone)
    [ "$health" = healthy ] || [ "$health" = unhealthy ] || [ "$health" = gone ] && break
    sleep 0.5
  done
  if [ "$health" != healthy ]; then
    "$DOCKER" logs "$NAME" 2>&1 | tail -n 30 >&2
    die "the container is $health, not healthy"
  fi
  echo "health endpoint answered ${answered:-?} s after docker run; healthy (HEALTHCHECK) after $(since "$started") s"
  uid=$("$DOCKER" exec "$NAME" id -u)
  [ "$uid" != 0 ] || die "the container runs as root"
  echo "runs as $("$DOCKER" exec "$NAME" id -un) (uid $uid)"
  if "$DOCKER" exec "$NAME" python -c "import socket; socket.create_connection(('deb.debian.org', 80), timeout=5)" \
      >/dev/null 2>&1; then
    die "the test container reaches the outside network"
  fi
  mkdir -p test-artifacts
  PYTHONPATH=tests "$python" - "$url" <<'EOF'
"""The Explore page served by the container: the first preset is analysed on arrival."""
import sys

from browser import chromium_page

url = sys.argv[1]
with chromium_page(1280, 800) as page:
    page.set_default_timeout(240_000)
    page.goto(f"{url}/Explore")
    page.get_by_text("Explore a prompt, layer by layer").wait_for()
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length >= 4")
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidgetRunningIcon\"],"
                           " [data-testid=\"stStatusWidgetRunningManIcon\"]')")
    page.wait_for_timeout(800)
    page.screenshot(path="test-artifacts/container-explore.png")
    errors = page.locator("[data-testid='stException'], [data-testid='stAlertContentError']").all_inner_texts()
    if errors:
        sys.exit(f"the Explore page shows errors: {errors}")
    answer = page.get_by_text("Final answer").first.inner_text().strip()
    if "Berlin" not in answer:
        sys.exit(f"the Explore page's final answer is not Berlin: {answer!r}")
    print(f"Explore page: {answer}")
EOF
  echo "memory in use: $("$DOCKER" stats --no-stream --format '{{.MemUsage}}' "$NAME")"
  "$DOCKER" stop -t 20 "$NAME" >/dev/null
  cleanup
  trap - EXIT
  echo "container test passed in $(since "$start") s"
}

case "${1:-}" in
  build) build ;;
  run) run ;;
  test) test_container ;;
  *) echo "usage: bash scripts/container.sh build|run|test" >&2; exit 2 ;;
esac
