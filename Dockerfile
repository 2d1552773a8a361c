# One image for every pollhook role; pick the role with the command:
#   serve (default: api + engine, runs migrations, embedded Postgres when
#   POLLHOOK_DATABASE_URL is unset), api, worker, migrate,
#   keys create --tenant NAME, sandbox.

# --- builder: resolve and install pollhook into a self-contained venv -------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# constraints.txt pins the whole dependency tree (pip freeze). setup.py puts migrations/
# into the wheel (app/migrations), so the runtime stage needs nothing but the venv.
COPY pyproject.toml setup.py MANIFEST.in constraints.txt README.md alembic.ini ./
COPY app/ ./app/
COPY migrations/ ./migrations/
RUN pip install --no-cache-dir -c constraints.txt .

# --- runtime ------------------------------------------------------------------
FROM python:3.11-slim-bookworm

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    POLLHOOK_HOST=0.0.0.0 \
    POLLHOOK_LOG_FORMAT=json

# Non-root user; Postgres (embedded fallback) also refuses to run as root.
# Only the embedded-Postgres data dir is writable by it; code stays root-owned.
RUN groupadd --system --gid 10001 pollhook \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
        --home-dir /app --no-create-home --shell /usr/sbin/nologin pollhook \
    && mkdir -p /app/.pollhook \
    && chown 10001:10001 /app/.pollhook

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app

# A file:// archive's folder (docker-compose.yml mounts a volume here): a new volume takes
# this owner, so the service's user can write it.
RUN mkdir -p /var/lib/pollhook/archive && chown 10001 /var/lib/pollhook/archive

USER 10001

EXPOSE 8000

# No curl in the slim image: probe with the stdlib. urlopen raises on a
# non-2xx/3xx status or a connection error, so python exits non-zero.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

ENTRYPOINT ["pollhook"]
CMD ["serve"]
