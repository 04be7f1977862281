# flashsrv container image.
#
#   docker build -t flashsrv .
#   docker run -p 8080:8080 -v "$PWD/public:/srv/www:ro" flashsrv
#
# HTTPS as well (port 8443), with a certificate and key mounted read-only (readable by UID
# 10001); `docker kill -s HUP` makes flashsrv read renewed files without a restart:
#   docker run -p 8080:8080 -p 8443:8443 -v "$PWD/public:/srv/www:ro" -v "$PWD/certs:/certs:ro" \
#       -e FLASHSRV_TLS_CERT=/certs/fullchain.pem -e FLASHSRV_TLS_KEY=/certs/privkey.pem flashsrv
#
# BASE defaults to the official slim Python image. Any Debian-like base also works (the test
# suite builds on a bare `debootstrap --variant=minbase bookworm` image): when the base has no
# Python, it comes from apt. Needs BuildKit (the default builder since Docker 23) or podman.
#
# Behind a TLS-intercepting proxy, hand pip the CA bundle as a build secret; it is mounted
# only for the one RUN that uses it and never stored in a layer:
#   docker build --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt -t flashsrv .
ARG BASE=python:3.12-slim

# ---------------------------------------------------------------------------------------------
# base: the base image plus a Python interpreter (>= 3.11), shared by both stages below.
FROM ${BASE} AS base
SHELL ["/bin/sh", "-eu", "-c"]
# DL3008 (pin apt versions) does not fit: the version is whatever the base's release carries.
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3; \
        apt-get clean; rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version'

# ---------------------------------------------------------------------------------------------
# builder: a venv at /opt/flashsrv holding flashsrv and its dependencies, then no pip.
FROM base AS builder
SHELL ["/bin/sh", "-eu", "-c"]
# Debian's python3 ships without ensurepip; python3-venv brings it (builder stage only).
# hadolint ignore=DL3008
RUN if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv; \
        apt-get clean; rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3 -m venv /opt/flashsrv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# Runtime dependencies first, read from pyproject.toml: this layer is reused until they change.
# The "compress" extra too (brotli, zstandard), so that --compress makes br and zstd as well.
COPY pyproject.toml /src/
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    /opt/flashsrv/bin/python -c 'import tomllib; p = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["compress"]))' > /tmp/requirements.txt; \
    /opt/flashsrv/bin/pip install --only-binary uvloop,httptools,brotli,zstandard -r /tmp/requirements.txt; \
    rm /tmp/requirements.txt

# Then flashsrv itself (packages flashsrv and flashsrv_helpers); pip byte-compiles it here,
# since the running container may have a read-only root filesystem.
COPY README.md /src/
COPY flashsrv /src/flashsrv
COPY helpers /src/helpers
RUN --mount=type=secret,id=pip_ca \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    /opt/flashsrv/bin/pip install --no-deps /src; \
    /opt/flashsrv/bin/pip uninstall -y pip setuptools wheel; \
    /opt/flashsrv/bin/python -c 'import flashsrv.cli, flashsrv_helpers'

# The built-in demo site becomes the default content of /srv/www: `docker run -p 8080:8080
# flashsrv` shows a page, and a volume mounted at /srv/www simply covers it.
RUN mkdir -p /out/www; \
    demo="$(/opt/flashsrv/bin/python -c 'import flashsrv.demo_site as d; print(d.__path__[0])')"; \
    cp -R "$demo/." /out/www/; \
    rm -rf /out/www/__init__.py /out/www/__pycache__; \
    chmod -R a+rX /out/www

# ---------------------------------------------------------------------------------------------
# final image: interpreter + venv + an unprivileged user; no compilers, no pip, no apt lists.
FROM base
SHELL ["/bin/sh", "-eu", "-c"]
LABEL org.opencontainers.image.title="flashsrv" \
      org.opencontainers.image.description="Static web server daemon (Flash AMPED: uvloop event loop + disk helper processes)" \
      org.opencontainers.image.licenses="MIT"

# Fixed UID/GID 10001 so that file permissions and Kubernetes' runAsUser match everywhere.
RUN groupadd --gid 10001 flashsrv; \
    useradd --uid 10001 --gid flashsrv --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin flashsrv

COPY --from=builder /opt/flashsrv /opt/flashsrv
COPY --from=builder /out/www /srv/www

# Every `flashsrv serve` option is also an environment variable FLASHSRV_<OPTION>
# (e.g. FLASHSRV_HELPERS, FLASHSRV_CACHE_BYTES, FLASHSRV_ACCESS_LOG_FORMAT=json,
# FLASHSRV_CONFIG=/etc/flashsrv/flashsrv.toml); flags given to `docker run` override them.
ENV PATH=/opt/flashsrv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLASHSRV_HOST=0.0.0.0 \
    FLASHSRV_PORT=8080 \
    FLASHSRV_ROOT=/srv/www

USER 10001:10001
WORKDIR /srv/www
EXPOSE 8080
# HTTPS (FLASHSRV_TLS_PORT's default), served only when FLASHSRV_TLS_CERT and _KEY are set.
EXPOSE 8443

# Asks the real server for / over HTTP (healthy: any status < 500 within 3 s).
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
    CMD ["flashsrv", "healthcheck"]

# flashsrv handles SIGTERM itself, also as PID 1: it drains, stops its helpers and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["flashsrv", "serve"]
