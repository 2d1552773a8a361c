"""Settings: one object, built once at the edge (CLI) and passed down.

Sources, highest priority first: constructor arguments, environment variables
(`POLLHOOK_` prefix, `__` for nesting), the TOML file named by `POLLHOOK_CONFIG`,
then the defaults below.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url

ENV_PREFIX = "POLLHOOK_"


class ProviderKind(StrEnum):
    MINIMAX_T2A = "minimax_t2a"
    JIMMY_SOUNDCLONE = "jimmy_soundclone"
    MINIMAX_VIDEO = "minimax_video"
    REPLICATE = "replicate"
    DASHSCOPE = "dashscope"
    ASSEMBLYAI = "assemblyai"
    FAL = "fal"
    ELEVENLABS_DUBBING = "elevenlabs_dubbing"


# Per-kind defaults from the providers' own documentation (see docs/providers.md):
# MiniMax allows 10 queries/s on the query endpoint; Jimmy publishes no rate limit but
# asks for a poll every 5-10 s and a total cap of about 30 minutes.
KIND_DEFAULTS: dict[ProviderKind, dict[str, Any]] = {
    ProviderKind.MINIMAX_T2A: {
        "base_url": "https://api.minimax.io",
        "rate_limit_per_s": 10.0,
        "first_poll_delay_s": 3.0,
        "min_poll_interval_s": 3.0,
        "max_poll_interval_s": 30.0,
        "request_timeout_s": 10.0,
        "deadline_s": 6 * 3600,
    },
    ProviderKind.JIMMY_SOUNDCLONE: {
        "base_url": "https://www.jimmyai.cn",
        "rate_limit_per_s": 5.0,
        "first_poll_delay_s": 5.0,
        "min_poll_interval_s": 5.0,
        "max_poll_interval_s": 10.0,
        "request_timeout_s": 10.0,
        "deadline_s": 1800,
    },
    # MiniMax video: no query limit is published (5 RPM is video *creation*'s); half T2A's
    # 10 queries/s, as one key often serves both. Videos take minutes: a poll every 10 s.
    ProviderKind.MINIMAX_VIDEO: {
        "base_url": "https://api.minimax.io",
        "rate_limit_per_s": 5.0,
        "first_poll_delay_s": 10.0,
        "min_poll_interval_s": 10.0,
        "max_poll_interval_s": 60.0,
        "request_timeout_s": 10.0,
        "deadline_s": 6 * 3600,
    },
    # Replicate: 3,000 requests per minute on every endpoint but create (50/s); its SDK
    # polls every 0.5 s. A prediction runs at most 30 minutes after a start of no stated
    # bound; its output is deleted an hour after it ends.
    ProviderKind.REPLICATE: {
        "base_url": "https://api.replicate.com",
        "rate_limit_per_s": 50.0,
        "first_poll_delay_s": 1.0,
        "min_poll_interval_s": 1.0,
        "max_poll_interval_s": 15.0,
        "request_timeout_s": 10.0,
        "deadline_s": 2 * 3600,
    },
    # DashScope: 20 queries/s per account on the task query; task data and result URLs
    # last 24 h, so a task still unseen by then can no longer be found.
    ProviderKind.DASHSCOPE: {
        "base_url": "https://dashscope-intl.aliyuncs.com",
        "rate_limit_per_s": 20.0,
        "first_poll_delay_s": 2.0,
        "min_poll_interval_s": 2.0,
        "max_poll_interval_s": 60.0,
        "request_timeout_s": 10.0,
        "deadline_s": 24 * 3600,
    },
    # AssemblyAI: 20,000 requests per 5 minutes per account (66.7/s, rounded down); its
    # SDK polls every 3 s; a transcript is kept 30 days by default (1 h at the shortest
    # TTL), and a long file's answer can be megabytes (request_timeout_s 30, as the SDK).
    ProviderKind.ASSEMBLYAI: {
        "base_url": "https://api.assemblyai.com",
        "rate_limit_per_s": 66.0,
        "first_poll_delay_s": 3.0,
        "min_poll_interval_s": 3.0,
        "max_poll_interval_s": 30.0,
        "request_timeout_s": 30.0,
        "deadline_s": 24 * 3600,
    },
    # fal publishes no polling limit (its own client polls every 0.1 s) and queues rather
    # than rejects; a COMPLETED result is kept 6 minutes from 10 KB, so polls stay far
    # closer than that. Requests wait in its queue without limit: 6 h bounds them.
    ProviderKind.FAL: {
        "base_url": "https://queue.fal.run",
        "rate_limit_per_s": 10.0,
        "first_poll_delay_s": 2.0,
        "min_poll_interval_s": 2.0,
        "max_poll_interval_s": 30.0,
        "request_timeout_s": 10.0,
        "deadline_s": 6 * 3600,
    },
    # ElevenLabs limits concurrent requests per plan (Free 2 ... Business 15), not a rate:
    # 2/s keeps the lowest plan's two in flight while a status query takes under a second.
    # Dubs take minutes to hours and stay until deleted; 12 h bounds a stuck one.
    ProviderKind.ELEVENLABS_DUBBING: {
        "base_url": "https://api.elevenlabs.io",
        "rate_limit_per_s": 2.0,
        "first_poll_delay_s": 10.0,
        "min_poll_interval_s": 10.0,
        "max_poll_interval_s": 60.0,
        "request_timeout_s": 10.0,
        "deadline_s": 12 * 3600,
    },
}

# The instances that exist without any configuration.
DEFAULT_INSTANCES: dict[str, ProviderKind] = {
    "minimax": ProviderKind.MINIMAX_T2A,
    "jimmy": ProviderKind.JIMMY_SOUNDCLONE,
    "minimax_video": ProviderKind.MINIMAX_VIDEO,
    "replicate": ProviderKind.REPLICATE,
    "dashscope": ProviderKind.DASHSCOPE,
    "assemblyai": ProviderKind.ASSEMBLYAI,
    "fal": ProviderKind.FAL,
    "elevenlabs": ProviderKind.ELEVENLABS_DUBBING,
}

MAX_DEADLINE_S = 7 * 24 * 3600


class PollSchedule(StrEnum):
    """How an instance spaces the polls of a task that has not finished yet."""

    # Learned from the instance's own completions (app/schedule/plans.py).
    ADAPTIVE = "adaptive"
    # min_poll_interval_s growing x1.5 to max_poll_interval_s while nothing changes.
    BACKOFF = "backoff"
    # Every min_poll_interval_s: a provider's documented cadence, followed to the letter.
    FIXED = "fixed"


class ProviderSettings(BaseModel):
    """One upstream provider instance (a kind, a host and one credential)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ProviderKind
    base_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$")]
    api_key: SecretStr | None = None
    # 0 disables the budget (a provider with no limit, or a local benchmark).
    rate_limit_per_s: Annotated[float, Field(ge=0, le=100_000)]
    first_poll_delay_s: Annotated[float, Field(ge=0, le=86_400)]
    min_poll_interval_s: Annotated[float, Field(gt=0, le=86_400)]
    max_poll_interval_s: Annotated[float, Field(gt=0, le=86_400)]
    request_timeout_s: Annotated[float, Field(gt=0, le=300)]
    deadline_s: Annotated[int, Field(gt=0, le=MAX_DEADLINE_S)]
    schedule: PollSchedule = PollSchedule.ADAPTIVE
    # This instance's result files are archived while the archive is on (ArchiveSettings).
    archive: bool = True
    # Adaptive: each poll is planned where the chance that the task finished since the
    # previous one reaches this. Lower polls more often and detects sooner.
    poll_hit_chance: Annotated[float, Field(gt=0, lt=1)] = 0.2
    # Adaptive: and not before a task that finished since then would on average have
    # waited this long for it. Higher spends fewer polls where completions are dense.
    poll_lateness_s: Annotated[float, Field(ge=0, le=3600)] = 0.5
    # Provider callbacks to POST /v1/inbound/{instance} (docs/providers.md, "Callbacks"):
    # the secret that verifies them, a token pollhook puts in the URL it hands out or, where
    # the provider signs its callbacks (Replicate), its `whsec_` signing secret. Unset, the
    # instance refuses callbacks and is polled alone.
    callback_secret: SecretStr | None = None
    # With callbacks on, every planned poll waits this many times longer (max_poll_interval_s
    # too): polling stays on, as the safety net for a callback that never comes.
    callback_poll_stretch: Annotated[float, Field(ge=1, le=100)] = 10.0

    @field_validator("api_key")
    @classmethod
    def _header_safe_key(cls, value: SecretStr | None) -> SecretStr | None:
        # It travels in an Authorization header, which holds visible ASCII only: anything
        # else fails every request of the instance, so it is refused at start instead.
        if value is not None and not re.fullmatch(r"[!-~]*", value.get_secret_value()):
            raise ValueError("must be visible ASCII characters, without spaces")
        return value

    @field_validator("callback_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # A token guessed is a task polled early, no more; still, it must not be guessable.
        if value is not None and len(value.get_secret_value()) < 24:
            raise ValueError("must be at least 24 characters (e.g. `openssl rand -hex 24`)")
        return value

    @property
    def callbacks_on(self) -> bool:
        return self.callback_secret is not None

    @field_validator("rate_limit_per_s")
    @classmethod
    def _whole_per_window(cls, value: float) -> float:
        # The budget counts the limit over one second, or over one request's time under 1/s
        # (app/budget/capacity.py, `limit_window_s`), and its bound on any window holds for a
        # whole number of requests per such window: at 2.5/s three slots fit in a second.
        if value > 0:
            per_window = value if value >= 1 else 1 / value
            if abs(per_window - round(per_window)) > 1e-9 * per_window:
                raise ValueError(
                    "must be a whole number of requests per second (10, 2, 1) or one request"
                    " per a whole number of seconds (0.5, 0.2); round a limit such as 150 per"
                    " minute down to one of these (2)"
                )
        return value

    @field_validator("base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _intervals_ordered(self) -> ProviderSettings:
        if self.min_poll_interval_s > self.max_poll_interval_s:
            raise ValueError("min_poll_interval_s must not exceed max_poll_interval_s")
        return self


class PollSettings(BaseModel):
    """Tuning of the background engine; the defaults suit most deployments."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A replica that dies mid-poll holds its tasks this long; then another polls them.
    lease_s: Annotated[float, Field(ge=1, le=3600)] = 30.0
    # Fallback wake-up of the loops when no notification arrives.
    tick_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # Per instance and replica: requests awaiting an answer at once.
    max_in_flight: Annotated[int, Field(ge=1, le=10_000)] = 256
    # While the budget binds, a rate-limited loop claims again once the budget is booked
    # no further ahead than twice the time its claims take, and never waits for it to be
    # booked less than this far ahead (app/polling/claiming.py)...
    claim_horizon_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    # ... and then tops the booked queue up by this much of the budget: a task that falls
    # due waits about half this for a claim. Smaller: fairer, and more, smaller claims.
    # The poll lease covers twice both plus the request.
    claim_batch_s: Annotated[float, Field(gt=0, le=60)] = 0.25
    max_batch: Annotated[int, Field(ge=1, le=10_000)] = 500
    # A rate-limited instance climbs back to its configured rate over this long.
    rate_recovery_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    # After a credential error, probe the upstream again this often.
    auth_retry_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    # On SIGTERM, in-flight polls get this long to finish before their leases are released.
    shutdown_grace_s: Annotated[float, Field(ge=0, le=120)] = 5.0
    # How often the learned completion times and each instance's poll demand are refreshed.
    model_refresh_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    # The forecast prices demand by the completions of this last stretch of time...
    forecast_window_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    # ... and plans to poll the tasks already overdue within this long.
    backlog_drain_s: Annotated[float, Field(gt=0, le=86_400)] = 120.0


class WebhookSettings(BaseModel):
    """Outbound delivery; the defaults follow Standard Webhooks and Svix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Delay before each attempt (the first is immediate); ±20 % jitter is added.
    retry_schedule_s: Annotated[list[float], Field(min_length=1, max_length=50)] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    # After a 429 or a timeout the next attempt waits at least this long.
    overload_floor_s: Annotated[float, Field(ge=0)] = 60.0
    # A 2xx must arrive within this long, body included.
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 15.0
    max_in_flight: Annotated[int, Field(ge=1, le=10_000)] = 64
    # Of those, at most this many to one endpoint (or one callback origin) at once: a slow
    # consumer holds this many slots, not all of them, and each host keeps a small pool of
    # kept-alive connections.
    per_endpoint_in_flight: Annotated[int, Field(ge=1, le=10_000)] = 16
    lease_s: Annotated[float, Field(ge=1, le=3600)] = 60.0
    # An endpoint failing this long without one success is disabled.
    disable_after_s: Annotated[float, Field(gt=0)] = 5 * 24 * 3600
    # Re-enabling an endpoint redelivers what failed to it within this window.
    redeliver_window_s: Annotated[float, Field(gt=0)] = 14 * 24 * 3600
    # After rotate-secret the old secret keeps signing alongside the new one this long.
    secret_grace_s: Annotated[float, Field(ge=0)] = 24 * 3600

    @field_validator("retry_schedule_s")
    @classmethod
    def _non_negative(cls, value: list[float]) -> list[float]:
        if any(v < 0 for v in value):
            raise ValueError("delays must be >= 0")
        return value


GIB = 1024**3
# An S3 presigned URL lives at most 7 days (SigV4), so no archive link outlives that.
MAX_LINK_TTL_S = 7 * 24 * 3600
# The standard variables of every S3 tool, by ArchiveSettings field: each is read when the
# POLLHOOK_ARCHIVE__ variable (or the config file) does not set the field. First found wins.
AWS_VARIABLES: dict[str, tuple[str, ...]] = {
    "endpoint_url": ("AWS_ENDPOINT_URL",),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "access_key_id": ("AWS_ACCESS_KEY_ID",),
    "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
}
# AWS's rule for bucket names (the path-style subset every S3-compatible store accepts).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# One segment of an object key or key prefix: app/blobs/base.py (`validate_key`) applies
# the same rule to keys.
KEY_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class FileArchive:
    """The archive in a folder of this machine (or a volume every replica mounts)."""

    root: Path


@dataclass(frozen=True)
class S3Archive:
    """The archive in an S3-compatible bucket, under `prefix` (no slashes at either end)."""

    bucket: str
    prefix: str


def parse_archive_url(url: str) -> FileArchive | S3Archive:
    """`file:///abs/path`, `file://` (a FileArchive of an empty path: the caller puts it under
    the data directory), or `s3://bucket[/prefix]`."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("file", "s3"):
        raise ValueError(
            "must be file:///absolute/path, file:// (a folder under the data directory) "
            "or s3://bucket/optional/prefix"
        )
    if any(c in rest for c in "?#") or any(c.isspace() for c in rest):
        raise ValueError("must not hold a query, a fragment or spaces")
    if scheme == "file":
        if not rest:
            return FileArchive(Path())
        if not rest.startswith("/"):
            raise ValueError(
                "a file:// URL names an absolute path and no host: file:///var/lib/archive"
            )
        return FileArchive(Path(rest))
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"{bucket!r} is not a bucket name: 3-63 lowercase letters, digits, dots and "
            "hyphens, starting and ending with a letter or digit"
        )
    prefix = prefix.strip("/")
    if prefix and not all(KEY_SEGMENT.fullmatch(part) for part in prefix.split("/")):
        raise ValueError(
            f"the prefix {prefix!r} must be segments of letters, digits, '.', '_' and '-' "
            "separated by '/', none starting with '.'"
        )
    return S3Archive(bucket, prefix)


@dataclass(frozen=True)
class AllowedNetwork:
    """One POLLHOOK_WEBHOOK_ALLOW_NETWORKS entry: a network, on one port or on every port.

    Written `10.0.0.0/8` or `fd00::/8` (every port), `127.0.0.1:9000` or `127.0.0.0/8:9000`,
    `[::1]:9000` or `[fd00::/8]:443` (one port; IPv6 needs the brackets, since `::1:9000` is
    an address). app/core/netguard.py (SsrfGuard) decides what an entry lets through.
    """

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> AllowedNetwork:
        entry = text.strip()
        network: ipaddress.IPv4Network | ipaddress.IPv6Network
        port_text: str | None = None
        try:
            if entry.startswith("["):
                address, bracket, rest = entry[1:].partition("]")
                if not bracket or (rest and not rest.startswith(":")):
                    raise ValueError("malformed brackets")
                network = ipaddress.IPv6Network(address, strict=False)
                port_text = rest[1:] if rest else None
            elif entry.count(":") == 1:  # IPv4 and a port; IPv6 has at least two colons
                address, _, port_text = entry.partition(":")
                network = ipaddress.IPv4Network(address, strict=False)
            else:
                network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(
                f"{text!r} is not a network or address, alone or with a port "
                "(10.0.0.0/8, 127.0.0.1:9000, [::1]:9000, [fd00::/8]:443)"
            ) from None
        if port_text is None:
            return cls(network)
        if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 1 <= int(port_text) <= 65_535:
            raise ValueError(f"{text!r}: the port must be a number from 1 to 65535")
        return cls(network, int(port_text))

    def __str__(self) -> str:
        if self.port is None:
            return str(self.network)
        if self.network.version == 6:
            return f"[{self.network}]:{self.port}"
        return f"{self.network}:{self.port}"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def parse_networks(value: Any) -> Any:
    """An allow-list setting (comma-separated text, or a list) as AllowedNetworks."""
    value = _split_csv(value)
    if not isinstance(value, list):
        return value
    parsed: list[Any] = []
    for item in value:
        if isinstance(item, str):
            item = AllowedNetwork.parse(item)
        elif isinstance(item, ipaddress.IPv4Network | ipaddress.IPv6Network):
            item = AllowedNetwork(item)
        parsed.append(item)
    return parsed


class ArchiveSettings(BaseModel):
    """The archive of result files (issue 14): off until `url` is set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    # Archived files are deleted this long after they were archived.
    retention_days: Annotated[float, Field(gt=0, le=3650)] = 30.0
    # A result file larger than this is not archived (recorded as too large).
    max_file_bytes: Annotated[int, Field(gt=0)] = GIB
    # A terminal webhook waits this long for the task's archive, then goes out without it.
    wait_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    # How long a download link handed out in a task or webhook stays valid.
    link_ttl_s: Annotated[float, Field(ge=60, le=MAX_LINK_TTL_S)] = 86_400.0
    # Files copied at once, per replica.
    concurrency: Annotated[int, Field(ge=1, le=256)] = 8
    # The first retry of a failed copy waits this long; later ones wait longer.
    retry_base_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    # Signs file:// download links. Unset: a random key kept beside the archive, shared by
    # every process that mounts the folder (app/blobs/local.py).
    link_secret: SecretStr | None = None
    # Networks result downloads may reach despite the SSRF guard: none by default. Apart
    # from POLLHOOK_WEBHOOK_ALLOW_NETWORKS on purpose: opening an internal network to
    # webhooks must not let a provider's URL read it into the archive.
    allow_networks: Annotated[list[AllowedNetwork], NoDecode] = Field(default_factory=list)
    # The S3 connection; each falls back to its AWS_* variable (AWS_VARIABLES).
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None

    @field_validator("url", "endpoint_url", "region", "access_key_id", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("allow_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: Any) -> Any:
        return parse_networks(value)

    @field_validator("url")
    @classmethod
    def _known_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_archive_url(value)
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _http_endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
                raise ValueError("must be an http:// or https:// URL")
            return value.rstrip("/")
        return value

    @field_validator("link_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @model_validator(mode="after")
    def _key_pair(self) -> ArchiveSettings:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(
                "access_key_id and secret_access_key go together (set both, or neither to "
                "use the store's own credential chain)"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.url is not None


class UiSettings(BaseModel):
    """The dashboard (/ui)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Signs the dashboard's session cookies. Unset: a random key created once in
    # `<data_dir>/ui-session.key`; set it when replicas do not share a data_dir, so that a
    # session signed by one is good at the others.
    session_secret: SecretStr | None = None

    @field_validator("session_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value


class AwsEnvironmentSource(PydanticBaseSettingsSource):
    """The AWS_* variables of AWS_VARIABLES as `archive` fields, below every other source:
    POLLHOOK_ARCHIVE__* and the config file win, and the sources merge field by field."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads everything this source gives

    def __call__(self) -> dict[str, Any]:
        found: dict[str, str] = {}
        for field, names in AWS_VARIABLES.items():
            value = next((os.environ[n] for n in names if os.environ.get(n, "").strip()), None)
            if value is not None:
                found[field] = value
        return {"archive": found} if found else {}


class StaticApiKey(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant: str
    key: SecretStr


TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class StaticAdminKey(BaseModel):
    """An operator's key: every tenant's objects, read-only when `read_only`."""

    model_config = ConfigDict(frozen=True)

    name: str
    key: SecretStr
    read_only: bool = False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        frozen=True,
    )

    database_url: SecretStr | None = None
    data_dir: Path = Path(".pollhook")
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65_535)] = 8000
    api_keys: Annotated[list[StaticApiKey], NoDecode] = Field(default_factory=list)
    # Operators: `name:key`, or `name:key:read` for a read-only operator.
    admin_keys: Annotated[list[StaticAdminKey], NoDecode] = Field(default_factory=list)
    webhook_allow_networks: Annotated[list[AllowedNetwork], NoDecode] = Field(default_factory=list)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict, validate_default=True)
    engine: PollSettings = Field(default_factory=PollSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    ui: UiSettings = Field(default_factory=UiSettings)
    # The base URL consumers reach this pollhook at, for the download links of a file://
    # archive. Unset: http://{host}:{port} (`resolved_public_url`).
    public_url: str | None = None
    # `pollhook worker` serves /metrics on this port when set (the API serves its own).
    metrics_port: Annotated[int | None, Field(ge=1, le=65_535)] = None
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_body_bytes: Annotated[int, Field(gt=0)] = 64 * 1024
    # POST /v1/tasks/batch: up to 1,000 tasks, about 1 KiB each on average.
    max_batch_body_bytes: Annotated[int, Field(gt=0)] = 1024 * 1024
    # How long a client may take to send a request: its headers (from connecting, or from
    # the previous response), then its body (from the headers; 408). Over it the connection
    # is closed, so a client sending half a request cannot hold it.
    request_read_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    max_metadata_bytes: Annotated[int, Field(gt=0)] = 16 * 1024
    # Per process; the pool may overflow to twice this. Below the API's concurrency it opens
    # and closes connections under load (a new backend each time).
    db_pool_size: Annotated[int, Field(ge=1, le=200)] = 20
    # Per tenant and API process (GCRA): `burst` requests at once, then this many per second.
    # 0 disables the limit.
    api_rate_limit_per_s: Annotated[float, Field(ge=0, le=1_000_000)] = 100.0
    api_rate_limit_burst: Annotated[int, Field(ge=1, le=1_000_000)] = 200

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(f"{ENV_PREFIX}CONFIG")
        if config_file:
            if not Path(config_file).is_file():
                raise SettingsError(f"{ENV_PREFIX}CONFIG: no such file: {config_file}")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        sources.append(AwsEnvironmentSource(settings_cls))
        return tuple(sources)

    @field_validator("database_url")
    @classmethod
    def _asyncpg_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not value.get_secret_value().startswith("postgresql+asyncpg://"):
            raise ValueError("must be a postgresql+asyncpg:// URL")
        return value

    @field_validator("public_url", mode="before")
    @classmethod
    def _public_url(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return None
            if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
                raise ValueError("must be an http:// or https:// URL without query or fragment")
            return value.rstrip("/")
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: Any) -> Any:
        value = _split_csv(value)
        if not isinstance(value, list):
            return value
        parsed: list[Any] = []
        for item in value:
            if isinstance(item, str):
                tenant, sep, key = item.partition(":")
                if not sep or not tenant or not key:
                    raise ValueError("each entry must be tenant:key")
                parsed.append({"tenant": tenant, "key": key})
            else:
                parsed.append(item)
        return parsed

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: list[StaticApiKey]) -> list[StaticApiKey]:
        for entry in value:
            if not re.match(TENANT_PATTERN, entry.tenant):
                raise ValueError(f"invalid tenant name {entry.tenant!r}")
            if len(entry.key.get_secret_value()) < 16:
                raise ValueError(f"the key for tenant {entry.tenant!r} is shorter than 16 chars")
        return value

    @field_validator("admin_keys", mode="before")
    @classmethod
    def _parse_admin_keys(cls, value: Any) -> Any:
        value = _split_csv(value)
        if not isinstance(value, list):
            return value
        parsed: list[Any] = []
        for item in value:
            if isinstance(item, str):
                name, sep, key = item.partition(":")
                key, read_only = (
                    (key[: -len(":read")], True) if key.endswith(":read") else (key, False)
                )
                if not sep or not name or not key:
                    raise ValueError("each entry must be name:key or name:key:read")
                parsed.append({"name": name, "key": key, "read_only": read_only})
            else:
                parsed.append(item)
        return parsed

    @field_validator("admin_keys")
    @classmethod
    def _check_admin_keys(cls, value: list[StaticAdminKey]) -> list[StaticAdminKey]:
        for entry in value:
            if not re.match(TENANT_PATTERN, entry.name):
                raise ValueError(f"invalid operator name {entry.name!r}")
            if len(entry.key.get_secret_value()) < 16:
                raise ValueError(f"the key for operator {entry.name!r} is shorter than 16 chars")
        return value

    @field_validator("webhook_allow_networks", mode="before")
    @classmethod
    def _parse_networks(cls, value: Any) -> Any:
        return parse_networks(value)

    @field_validator("providers", mode="before")
    @classmethod
    def _merge_provider_defaults(cls, value: Any) -> Any:
        """Deep-merge configured instances over the built-in ones and their kind's defaults.

        Environment variables arrive as partial dicts (only the fields set), so without this
        `POLLHOOK_PROVIDERS__MINIMAX__API_KEY=...` alone would drop minimax's host and limits.
        """
        configured: dict[str, Any] = dict(value or {})
        merged: dict[str, Any] = {}
        names = list(DEFAULT_INSTANCES) + [n for n in configured if n not in DEFAULT_INSTANCES]
        for name in names:
            given = configured.get(name) or {}
            if isinstance(given, BaseModel):
                given = given.model_dump()
            if not isinstance(given, dict):
                merged[name] = given
                continue
            kind_raw = given.get("kind", DEFAULT_INSTANCES.get(name))
            try:
                kind = ProviderKind(str(kind_raw))
            except ValueError:
                merged[name] = given  # let field validation name the bad kind
                continue
            merged[name] = {**KIND_DEFAULTS[kind], "kind": kind, **given}
        return merged

    @field_validator("providers")
    @classmethod
    def _check_provider_names(
        cls, value: dict[str, ProviderSettings]
    ) -> dict[str, ProviderSettings]:
        for name in value:
            if not re.match(r"^[a-z][a-z0-9_]{0,31}$", name):
                raise ValueError(f"invalid provider instance name {name!r}")
        return value

    @property
    def uses_embedded_db(self) -> bool:
        return self.database_url is None

    @property
    def resolved_public_url(self) -> str:
        if self.public_url is not None:
            return self.public_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @model_validator(mode="after")
    def _file_links_reachable(self) -> Settings:
        # A file:// archive's links start with the public URL; from a wildcard bind
        # (0.0.0.0, as in a container) the default would be a link nobody can follow.
        wildcard = self.host in ("0.0.0.0", "::", "")
        if self.public_url is None and wildcard and isinstance(self.archive_target, FileArchive):
            raise ValueError(
                f"a file:// archive hands out links to pollhook itself: set POLLHOOK_PUBLIC_URL "
                f"to the URL consumers reach it at (this process listens on {self.host})"
            )
        return self

    @property
    def archive_target(self) -> FileArchive | S3Archive | None:
        """Where the archive is, None while it is off; `file://` is a folder of data_dir."""
        if self.archive.url is None:
            return None
        target = parse_archive_url(self.archive.url)
        if isinstance(target, FileArchive) and target.root == Path():
            return FileArchive(self.data_dir / "archive")
        return target

    def secret_values(self) -> list[str]:
        """Every configured secret, for the log redactor: provider keys and callback secrets,
        static API and admin keys, the database password, the archive's S3 secret key and
        link secret, and the dashboard's session secret."""
        values = [p.api_key.get_secret_value() for p in self.providers.values() if p.api_key]
        values += [
            p.callback_secret.get_secret_value()
            for p in self.providers.values()
            if p.callback_secret
        ]
        values += [entry.key.get_secret_value() for entry in self.api_keys]
        values += [entry.key.get_secret_value() for entry in self.admin_keys]
        for secret in (
            self.archive.secret_access_key,
            self.archive.link_secret,
            self.ui.session_secret,
        ):
            if secret is not None:
                values.append(secret.get_secret_value())
        if self.database_url is not None:
            password = make_url(self.database_url.get_secret_value()).password
            if password:
                values.append(str(password))
        return values


class SettingsError(Exception):
    """Invalid configuration, with a message naming the offending variable."""


# Variables pollhook reads outside Settings: the config file's name, the `sandbox` command's
# options, and the switches of the test suite and scripts/audit. They are not unknown.
OTHER_VARIABLES = frozenset(
    {
        f"{ENV_PREFIX}CONFIG",
        f"{ENV_PREFIX}SANDBOX_HOST",
        f"{ENV_PREFIX}SANDBOX_PORT",
        f"{ENV_PREFIX}TEST_DATABASE_URL",
        f"{ENV_PREFIX}TEST_DB_OUTAGE_S",
        f"{ENV_PREFIX}AUDIT_REQUIRED",
    }
)

_NESTED_MODELS: dict[str, type[BaseModel]] = {
    "engine": PollSettings,
    "webhooks": WebhookSettings,
    "archive": ArchiveSettings,
}
# The model whose fields sit under each top-level setting (providers: one level deeper).
_FIELD_MODELS: dict[str, type[BaseModel]] = {**_NESTED_MODELS, "providers": ProviderSettings}


def variable_name(*loc: str) -> str:
    """The environment variable that sets the setting at `loc`."""
    return ENV_PREFIX + "__".join(loc).upper() if loc else f"{ENV_PREFIX}*"


def setting_variables(instances: Iterable[str] = ()) -> set[str]:
    """Every variable that names a setting, with the provider fields of the built-in instances
    and of `instances` (any other instance name is valid too: it declares a new instance)."""
    names = {variable_name(field) for field in Settings.model_fields}
    for field, model in _NESTED_MODELS.items():
        names |= {variable_name(field, sub) for sub in model.model_fields}
    for instance in {*DEFAULT_INSTANCES, *(i.lower() for i in instances)}:
        names.add(variable_name("providers", instance))
        names |= {variable_name("providers", instance, f) for f in ProviderSettings.model_fields}
    return names


def nearest_name(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate most like `name`, if one is close enough to be a likely typo."""
    by_tail = {c.upper().removeprefix(ENV_PREFIX): c for c in candidates}
    tail = name.upper().removeprefix(ENV_PREFIX)
    match = difflib.get_close_matches(tail, list(by_tail), n=1, cutoff=0.6)
    return by_tail[match[0]] if match else None


@dataclass(frozen=True)
class UnknownSetting:
    name: str
    source: str  # "environment", or the config file it was found in
    suggestion: str | None


def unknown_settings(environ: Mapping[str, str]) -> list[UnknownSetting]:
    """POLLHOOK_* variables (and top-level keys of the POLLHOOK_CONFIG file) that Settings
    would silently ignore. A misspelt field of a nested setting (`POLLHOOK_ENGINE__LEASE`,
    `POLLHOOK_PROVIDERS__MINIMAX__APIKEY`) is not one of them: validation refuses it."""
    found: list[UnknownSetting] = []
    variables = [name.upper() for name in environ if name.upper().startswith(ENV_PREFIX)]
    instances = {
        parts[1] for v in variables if len(parts := v.removeprefix(ENV_PREFIX).split("__")) == 3
    }
    candidates = setting_variables(instances) | OTHER_VARIABLES
    for variable in sorted(variables):
        head = variable.removeprefix(ENV_PREFIX).split("__", 1)[0].lower()
        if variable in OTHER_VARIABLES or head in Settings.model_fields:
            continue
        found.append(UnknownSetting(variable, "environment", nearest_name(variable, candidates)))
    config_file = environ.get(f"{ENV_PREFIX}CONFIG")
    if config_file and Path(config_file).is_file():
        with Path(config_file).open("rb") as f:
            document = tomllib.load(f)
        for key in sorted(document):
            if key not in Settings.model_fields:
                suggestion = difflib.get_close_matches(key, list(Settings.model_fields), n=1)
                found.append(
                    UnknownSetting(key, config_file, suggestion[0] if suggestion else None)
                )
    return found


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming its variable.

    A provider instance without a valid `kind` gets one line, not one per field it would
    have inherited from the kind's defaults."""
    items = error.errors()
    kindless = {
        tuple(item["loc"][:2])
        for item in items
        if len(item["loc"]) == 3 and item["loc"][0] == "providers" and item["loc"][2] == "kind"
    }
    lines = []
    for item in items:
        loc = [str(part) for part in item["loc"]]
        message = item["msg"]
        if not loc:
            # A rule across settings (a model validator): its message names them.
            lines.append(f"invalid settings: {message.removeprefix('Value error, ')}")
            continue
        variable = variable_name(*loc)
        if tuple(item["loc"][:2]) in kindless and len(loc) == 3 and item["type"] == "missing":
            if loc[2] != "kind":
                continue  # a field the kind's defaults would have filled in
            kinds = ", ".join(kind.value for kind in ProviderKind)
            message = f"required for a new provider instance (one of: {kinds})"
            close = difflib.get_close_matches(loc[1], list(DEFAULT_INSTANCES), n=1)
            if close:
                message += f"; or did you mean the instance {close[0].upper()}?"
        elif item["type"] == "extra_forbidden" and loc[0] in _FIELD_MODELS:
            fields = list(_FIELD_MODELS[loc[0]].model_fields)
            close = difflib.get_close_matches(loc[-1].lower(), fields, n=1)
            message = "no such setting"
            if close:
                message += f" (did you mean {variable_name(*loc[:-1], close[0])}?)"
        if loc[0] == "archive" and len(loc) == 2 and loc[1] in AWS_VARIABLES:
            variable += f" (or {' / '.join(AWS_VARIABLES[loc[1]])})"
        lines.append(f"invalid setting {variable}: {message}")
    return "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        config_file = os.environ.get(f"{ENV_PREFIX}CONFIG")
        raise SettingsError(f"{ENV_PREFIX}CONFIG: {config_file} is not valid TOML: {exc}") from None
