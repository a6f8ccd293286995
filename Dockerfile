# keeperd container image: multi-stage, slim, non-root.
#   docker build -t keeperd .
#   docker run --rm -v keeperd-state:/var/lib/keeperd \
#     -v /etc/keeperd/keeperd.yaml:/etc/keeperd/keeperd.yaml:ro -p 127.0.0.1:9464:9464 keeperd
# The config's metrics.listen must be 0.0.0.0 inside a container for the port to be reachable.
# keeperd runs as uid 10001 (gid 10001): a mounted key or secret file must be that user's, mode
# 0600 (`chown 10001:10001 key && chmod 600 key` on the host) — a root-owned 0600 file cannot
# be read, and one others can read is refused (docs/operations.md, "Docker").

# The base image pinned by digest (a tag moves under a rebuild; a digest is one image). This
# digest is python:3.11-slim-bookworm's as public Dockerfiles pin it; it was not pulled on the
# machine that wrote this line (no registry reachable there): before trusting it, compare with
# `docker buildx imagetools inspect python:3.11-slim-bookworm`, and move it on purpose, by a
# commit, as Debian's security updates land.
ARG BASE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${BASE} AS build
# A C compiler with OpenMP, for the cascade kernels compiled ahead of time (setup.py): the
# variant that runs where JIT may not (keeperd/risk/kernels.py picks it first).
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY requirements ./requirements
COPY keeperd ./keeperd
# Every package from the lock, each file checked against its sha256; keeperd itself with
# nothing resolved (--no-deps) and built by the locked setuptools.
RUN python -m venv /opt/keeperd/.venv \
 && /opt/keeperd/.venv/bin/pip install --no-cache-dir --require-hashes \
      -r requirements/runtime.lock \
 && /opt/keeperd/.venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
 && NUMBA_CACHE_DIR=/opt/keeperd/numba-cache /opt/keeperd/.venv/bin/python -c \
      "from keeperd.risk.kernels import kernels; kernels()" \
 && /opt/keeperd/.venv/bin/python -c \
      "import keeperd.risk._kernels_aot"  # (built, not silently skipped: optional=True)

FROM ${BASE}
# libgomp1: the OpenMP runtime the compiled kernels link against (not in the slim image).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 keeperd \
 && useradd --system --uid 10001 --gid keeperd --home-dir /var/lib/keeperd --shell /usr/sbin/nologin keeperd \
 && mkdir -p /var/lib/keeperd /etc/keeperd \
 && chown keeperd:keeperd /var/lib/keeperd
COPY --from=build /opt/keeperd/.venv /opt/keeperd/.venv
# The cascade kernels, compiled at build time (numba's cache; read-only is fine).
COPY --from=build /opt/keeperd/numba-cache /opt/keeperd/numba-cache
COPY docker/entrypoint.sh /usr/local/bin/keeperd-entrypoint
ENV PATH=/opt/keeperd/.venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KEEPERD_STATE_DIR=/var/lib/keeperd \
    NUMBA_CACHE_DIR=/opt/keeperd/numba-cache
USER keeperd:keeperd
WORKDIR /var/lib/keeperd
VOLUME ["/var/lib/keeperd"]
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('KEEPERD_METRICS_PORT', '9464') + '/healthz', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["keeperd-entrypoint"]
CMD ["run", "--config", "/etc/keeperd/keeperd.yaml"]
