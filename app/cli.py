"""`pollhook` command line: serve, api, worker, migrate, keys."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from dataclasses import replace
from typing import Any

import click
import uvicorn
import uvloop
from sqlalchemy.ext.asyncio import AsyncEngine

from app import __version__
from app.core.config import Settings, SettingsError, load_settings, unknown_settings, variable_name
from app.core.db import create_engine, create_sessionmaker, describe_connect_error, transaction
from app.core.embedded import EmbeddedPostgres, start_embedded
from app.core.logging import configure_logging, get_logger

log = get_logger("pollhook")


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(settings.log_format, settings.log_level, settings.secret_values())
    for unknown in unknown_settings(os.environ):
        log.warning(
            "unknown_setting",
            setting=unknown.name,
            source=unknown.source,
            did_you_mean=unknown.suggestion,
        )
    return settings


def _refuse_unusable_callbacks(settings: Settings) -> None:
    from app.inbound.service import callback_config_problems

    problems = callback_config_problems(settings)
    if problems:
        raise click.ClickException("; ".join(problems))


def _refuse_well_known_keys(settings: Settings) -> None:
    from app.auth.exposure import public_key_problem

    problem = public_key_problem(settings.host, settings.api_keys, settings.admin_keys)
    if problem:
        raise click.ClickException(problem)


def _warn_missing_provider_keys(settings: Settings) -> None:
    for name, provider in settings.providers.items():
        if provider.api_key is None:
            log.warning(
                "provider_key_missing",
                instance=name,
                variable=variable_name("providers", name, "api_key"),
                effect="its tasks wait, with health auth_failed, until a key is set",
            )


@asynccontextmanager
async def _database(
    settings: Settings, *, migrate: bool | None = None
) -> AsyncIterator[AsyncEngine]:
    """Open the configured database (starting the embedded server when none is configured).

    The embedded database is pollhook's own, so it is always migrated; an external one only
    when asked (`serve`, `migrate`), otherwise its schema must already be current.
    """
    from app.core import migrate as migrations

    embedded: EmbeddedPostgres | None = None
    if settings.database_url is None:
        embedded = await asyncio.to_thread(start_embedded, settings.data_dir)
        await embedded.ensure_database()
        url = embedded.url
        log.info("embedded_postgres_started", data_dir=str(settings.data_dir.resolve()))
    else:
        url = settings.database_url.get_secret_value()
    engine = create_engine(url, pool_size=settings.db_pool_size)
    try:
        await _check_connection(engine, url, settings)
        if migrate or (migrate is None and embedded is not None):
            await migrations.upgrade(engine)
        elif migrate is None:
            await _require_current_schema(engine)
        yield engine
    finally:
        await engine.dispose()
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


async def _check_connection(engine: AsyncEngine, url: str, settings: Settings) -> None:
    """Turn a database that cannot be reached into one line naming the setting."""
    source = (
        f"the embedded database under {settings.data_dir}"
        if settings.uses_embedded_db
        else variable_name("database_url")
    )
    try:
        async with engine.connect():
            pass
    except Exception as exc:
        message = describe_connect_error(exc, url, source)
        if message is None:
            raise
        raise click.ClickException(message) from None


async def _require_current_schema(engine: AsyncEngine) -> None:
    from alembic.script import ScriptDirectory

    from app.core import migrate as migrations

    current = await migrations.current_revision(engine)
    head = ScriptDirectory.from_config(migrations.alembic_config()).get_current_head()
    if current != head:
        raise click.ClickException(
            f"the database schema is at {current or 'nothing'}, not {head}: run `pollhook migrate`"
        )


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    # uvicorn handles SIGTERM itself, then re-raises it once shut down; this handler makes
    # that re-raise unwind through the cleanup (engine, embedded database) like Ctrl-C does,
    # instead of killing the process on the spot.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        raise click.ClickException(f"cannot reach the database: {exc}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pollhook")
def cli() -> None:
    """pollhook: track asynchronous AI-audio tasks and deliver signed webhooks.

    Settings come from POLLHOOK_* environment variables (see the README); with no
    POLLHOOK_DATABASE_URL an embedded Postgres runs under POLLHOOK_DATA_DIR.
    """


_host_option = click.option("--host", help="Listen address (default POLLHOOK_HOST, 127.0.0.1).")
_port_option = click.option("--port", type=int, help="Listen port (default POLLHOOK_PORT, 8000).")


@cli.command()
@_host_option
@_port_option
def serve(host: str | None, port: int | None) -> None:
    """Run the API and the background engine in one process (migrates first)."""
    settings = _settings(host=host, port=port)
    _refuse_well_known_keys(settings)
    _refuse_unusable_callbacks(settings)
    _warn_missing_provider_keys(settings)

    async def main() -> None:
        async with _database(settings, migrate=True) as engine:
            await _ensure_quickstart_key(settings, engine)
            await _serve_http(settings, engine, with_engine=True)

    _run(main)


@cli.command()
@_host_option
@_port_option
def api(host: str | None, port: int | None) -> None:
    """Run only the HTTP API (any number of replicas may run)."""
    settings = _settings(host=host, port=port)
    _refuse_well_known_keys(settings)
    _refuse_unusable_callbacks(settings)

    async def main() -> None:
        async with _database(settings) as engine:
            await _serve_http(settings, engine, with_engine=False)

    _run(main)


@cli.command()
def worker() -> None:
    """Run only the background engine (any number of replicas may run)."""
    settings = _settings()
    _refuse_unusable_callbacks(settings)
    _warn_missing_provider_keys(settings)

    async def main() -> None:
        from app.worker.runner import run_worker

        async with _database(settings) as engine:
            await run_worker(settings, engine)

    _run(main)


@cli.command()
def migrate() -> None:
    """Apply database migrations up to the latest revision."""
    settings = _settings()

    async def main() -> None:
        from app.core import migrate as migrations

        async with _database(settings, migrate=True) as engine:
            click.echo(f"database schema at {await migrations.current_revision(engine)}")

    _run(main)


@cli.group()
def keys() -> None:
    """Manage API keys stored in the database."""


@keys.command("create")
@click.option("--tenant", help="The tenant the key acts for.")
@click.option(
    "--operator",
    metavar="NAME",
    help="Make an operator's key instead: it sees and changes every tenant's objects.",
)
@click.option("--read-only", is_flag=True, help="With --operator: it sees, and changes nothing.")
@click.option("--name", help="A label to recognise the key by.")
def keys_create(
    tenant: str | None, operator: str | None, read_only: bool, name: str | None
) -> None:
    """Create an API key and print it once (only its hash is stored)."""
    from app.models import Role

    if (tenant is None) == (operator is None):
        raise click.UsageError("give exactly one of --tenant NAME and --operator NAME")
    if read_only and operator is None:
        raise click.UsageError("--read-only makes a read-only operator: use it with --operator")
    role = Role.TENANT if operator is None else Role.OPERATOR_READ if read_only else Role.OPERATOR
    owner = tenant or operator or ""
    settings = _settings()

    async def main() -> None:
        from app.auth.service import create_key
        from app.core.errors import ValidationFailed

        async with _database(settings) as engine, transaction(create_sessionmaker(engine)) as s:
            try:
                new = await create_key(s, owner, name, role)
            except ValidationFailed as exc:
                hint = "--tenant" if role is Role.TENANT else "--operator"
                raise click.BadParameter(exc.message, param_hint=hint) from None
        click.echo(new.key)
        who = f"tenant {new.tenant}" if role is Role.TENANT else f"{role.value} {new.tenant}"
        click.echo(f"({who}; shown once, store it now)", err=True)

    _run(main)


@keys.command("list")
@click.option("--tenant", help="Only this tenant's keys.")
def keys_list(tenant: str | None) -> None:
    """List keys by prefix (never the key itself)."""
    settings = _settings()

    async def main() -> None:
        from app.auth.repository import ApiKeyRepository

        async with _database(settings) as engine, transaction(create_sessionmaker(engine)) as s:
            rows = await ApiKeyRepository(s).list(tenant)
        for row in rows:
            state = "revoked" if row.revoked_at else "active"
            owner = f"tenant={row.tenant}" if row.role == "tenant" else f"{row.role}={row.tenant}"
            click.echo(
                f"{row.key_prefix}…  {owner}  name={row.name or '-'}  "
                f"created={row.created_at:%Y-%m-%d %H:%M}  {state}"
            )

    _run(main)


@keys.command("revoke")
@click.argument("prefix")
def keys_revoke(prefix: str) -> None:
    """Revoke the key(s) whose printed prefix is PREFIX."""
    settings = _settings()

    async def main() -> None:
        from app.auth.repository import ApiKeyRepository

        async with _database(settings) as engine, transaction(create_sessionmaker(engine)) as s:
            count = await ApiKeyRepository(s).revoke(prefix.rstrip("…"))
        if count == 0:
            raise click.ClickException(f"no active key with prefix {prefix}")
        click.echo(f"revoked {count} key(s)")

    _run(main)


async def _ensure_quickstart_key(settings: Settings, engine: AsyncEngine) -> None:
    """On the embedded default with no key anywhere, create a tenant's key and an operator's
    so that the quick start and its dashboard work."""
    if not settings.uses_embedded_db or settings.api_keys or settings.admin_keys:
        return
    from app.auth.repository import ApiKeyRepository
    from app.auth.service import create_key
    from app.models import Role

    async with transaction(create_sessionmaker(engine)) as session:
        if await ApiKeyRepository(session).count_active() > 0:
            return
        tenant = await create_key(session, "default", "quick start")
        operator = await create_key(session, "admin", "quick start", Role.OPERATOR)
    click.echo(
        "\nCreated an API key for tenant 'default' (shown once; "
        "`pollhook keys create --tenant NAME` makes more):\n\n"
        f"    {tenant.key}\n\n"
        f"and an operator key 'admin' for the dashboard at {settings.resolved_public_url}/ui "
        "(shown once; it sees every tenant):\n\n"
        f"    {operator.key}\n",
    )


async def _serve_http(settings: Settings, engine: AsyncEngine, *, with_engine: bool) -> None:
    from app.core.http_protocol import bounded_headers_protocol
    from app.main import create_app

    app = create_app(settings, engine=engine)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        server_header=False,
        # uvicorn bounds no request's headers: a slow client would hold its connection.
        http=bounded_headers_protocol(settings.request_read_timeout_s),
    )
    server = uvicorn.Server(config)
    background: asyncio.Task[None] | None = None
    stop_engine = asyncio.Event()
    if with_engine:
        from app.worker.runner import run_worker

        background = asyncio.create_task(run_worker(settings, engine, stop=stop_engine))
    try:
        await server.serve()
    finally:
        if background is not None:
            stop_engine.set()
            with suppress(asyncio.CancelledError):
                await background
    if not server.started:
        raise click.ClickException(f"could not listen on {settings.host}:{settings.port}")


@cli.command()
@click.option(
    "--host",
    envvar="POLLHOOK_SANDBOX_HOST",
    default="127.0.0.1",
    show_default=True,
    show_envvar=True,
    help="Listen address.",
)
@click.option(
    "--port",
    envvar="POLLHOOK_SANDBOX_PORT",
    type=click.IntRange(0, 65535),
    default=8900,
    show_default=True,
    show_envvar=True,
    help="Listen port.",
)
@click.option(
    "--minimax-rate",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="MiniMax requests per second per API key before its 1002 answer; 0 = unlimited.",
)
@click.option(
    "--jimmy-rate",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Jimmy requests per second per API key before its 429 answer; 0 = unlimited.",
)
@click.option("--seed", type=int, help="Seed for the random choices, to repeat a run exactly.")
@click.option(
    "--callback-secret",
    default=None,
    help="The whsec_ secret Standard Webhooks callbacks are signed with (Replicate's); "
    "default: the sandbox's own, printed by GET /_sandbox/config.",
)
def sandbox(
    host: str,
    port: int,
    minimax_rate: float,
    jimmy_rate: float,
    seed: int | None,
    callback_secret: str | None,
) -> None:
    """Serve fakes of every provider's API (scripted tasks, faults, callbacks) for trying
    pollhook.

    Point an instance's base URL at it (POLLHOOK_PROVIDERS__MINIMAX__BASE_URL, ...). Script
    tasks and faults through /_sandbox (see /docs on the running sandbox).
    """
    from app.sandbox.app import create_sandbox_app
    from app.sandbox.state import SandboxConfig

    configure_logging("auto", "INFO")
    config = SandboxConfig(minimax_rate=minimax_rate, jimmy_rate=jimmy_rate, seed=seed)
    if callback_secret is not None:
        config = replace(config, callback_secret=callback_secret)
    app = create_sandbox_app(config)
    server_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",  # the callback sender
        timeout_graceful_shutdown=2,  # do not wait out requests held by timeout faults
        server_header=False,
    )
    server = uvicorn.Server(server_config)
    log.info(
        "sandbox_starting",
        host=host,
        port=port,
        minimax_rate=minimax_rate,
        jimmy_rate=jimmy_rate,
        seed=seed,
    )
    signal.signal(signal.SIGTERM, _terminate)
    # uvicorn exits (SystemExit) when it cannot bind; say so in one line instead.
    with (
        suppress(KeyboardInterrupt, SystemExit),
        asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner,
    ):
        runner.run(server.serve())
    if not server.started:
        raise click.ClickException(f"could not listen on {host}:{port}")


def main() -> None:
    try:
        cli(standalone_mode=True)
    except SettingsError as exc:  # pragma: no cover - _settings converts these
        click.echo(str(exc), err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
