# syntax=docker/dockerfile:1
# callbutton: `callbutton serve` in production mode, as a non-root user (README.md, "Running in
# production"; deploy/compose.yaml runs it with its databases and a TURN relay).
#
# The install steps are the ones CI runs (./dev setup) without the test extras: a virtualenv, pip
# upgraded, then callbutton installed editable from pyproject.toml, whose dependencies are pinned
# exactly. Editable, as in development, because the server serves web/ and docs/openapi.json from
# its source tree (server/web.py). No Postgres binaries: production names its databases
# (CALLBUTTON_DATABASE_URL), it never starts a local cluster.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 callbutton \
    && useradd --system --uid 10001 --gid callbutton --home-dir /var/lib/callbutton --no-create-home \
        --shell /usr/sbin/nologin callbutton \
    && install -d -o callbutton -g callbutton -m 0700 /var/lib/callbutton

# The source stays root's: the server's user reads it and cannot change it.
WORKDIR /app
COPY pyproject.toml README.md ./
COPY server/ server/
COPY media/ media/
COPY storage/ storage/
COPY loadtest/ loadtest/
COPY web/ web/
COPY docs/ docs/
COPY deploy/healthcheck.py /usr/local/bin/callbutton-healthcheck

RUN --mount=type=cache,target=/root/.cache/pip \
    python -m venv /opt/venv \
    && /opt/venv/bin/python -m pip install --quiet --upgrade pip \
    && /opt/venv/bin/python -m pip install --quiet -e .

# Production settings. The master key and the session secret are files (Docker secrets); the
# public origin and TLS (a certificate, or CALLBUTTON_TRUSTED_PROXIES behind a reverse proxy) are
# the deployment's to give: without them the server refuses to start and says which is missing.
ENV PATH=/opt/venv/bin:$PATH \
    CALLBUTTON_ENV=production \
    CALLBUTTON_HOST=0.0.0.0 \
    CALLBUTTON_PORT=8080 \
    CALLBUTTON_DATA_DIR=/var/lib/callbutton \
    CALLBUTTON_MASTER_KEY_FILE=/run/secrets/master_key \
    CALLBUTTON_SESSION_SECRET_FILE=/run/secrets/session_secret

# Encrypted recordings and clips (CALLBUTTON_DATA_DIR/recordings).
VOLUME ["/var/lib/callbutton"]
USER callbutton
EXPOSE 8080

# GET /healthz on the server's own port, over https when it serves TLS itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/opt/venv/bin/python", "/usr/local/bin/callbutton-healthcheck"]

# `serve` migrates first; `docker compose run --rm callbutton create-org ...` runs other commands.
ENTRYPOINT ["callbutton"]
CMD ["serve"]
