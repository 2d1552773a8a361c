from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.core.config import (
    AWS_VARIABLES,
    FileArchive,
    ProviderKind,
    S3Archive,
    SettingsError,
    UnknownSetting,
    load_settings,
    unknown_settings,
)

# The kinds a new instance may name, as the settings errors list them.
KINDS = ", ".join(kind.value for kind in ProviderKind)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("POLLHOOK_"):
            monkeypatch.delenv(name)
    for names in AWS_VARIABLES.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = load_settings()
    assert settings.uses_embedded_db
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    minimax, jimmy = settings.providers["minimax"], settings.providers["jimmy"]
    assert minimax.kind is ProviderKind.MINIMAX_T2A
    assert minimax.base_url == "https://api.minimax.io"
    assert minimax.rate_limit_per_s == 10
    assert jimmy.kind is ProviderKind.JIMMY_SOUNDCLONE
    assert (jimmy.min_poll_interval_s, jimmy.max_poll_interval_s) == (5, 10)
    assert minimax.api_key is None


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLLHOOK_DATABASE_URL", "postgresql+asyncpg://u:p@db:5432/x")
    monkeypatch.setenv("POLLHOOK_API_KEYS", "acme:0123456789abcdef, beta:fedcba9876543210")
    monkeypatch.setenv("POLLHOOK_WEBHOOK_ALLOW_NETWORKS", "10.0.0.0/8,fd00::/8")
    monkeypatch.setenv("POLLHOOK_PROVIDERS__MINIMAX__API_KEY", "sk-secret")
    monkeypatch.setenv("POLLHOOK_PROVIDERS__MINIMAX_CN__KIND", "minimax_t2a")
    monkeypatch.setenv("POLLHOOK_PROVIDERS__MINIMAX_CN__BASE_URL", "https://api.minimaxi.com/")
    monkeypatch.setenv("POLLHOOK_PROVIDERS__MINIMAX_CN__RATE_LIMIT_PER_S", "5")
    settings = load_settings()
    assert not settings.uses_embedded_db
    assert [(k.tenant, k.key.get_secret_value()) for k in settings.api_keys] == [
        ("acme", "0123456789abcdef"),
        ("beta", "fedcba9876543210"),
    ]
    assert [str(n) for n in settings.webhook_allow_networks] == ["10.0.0.0/8", "fd00::/8"]
    minimax = settings.providers["minimax"]
    assert minimax.api_key is not None
    assert minimax.api_key.get_secret_value() == "sk-secret"
    assert minimax.base_url == "https://api.minimax.io"  # the rest of the defaults survive
    cn = settings.providers["minimax_cn"]
    assert (cn.base_url, cn.rate_limit_per_s, cn.min_poll_interval_s) == (
        "https://api.minimaxi.com",
        5,
        3,
    )
    assert "sk-secret" not in repr(settings)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("alice:0123456789abcdef", [("alice", "0123456789abcdef", False)]),
        ("alice:0123456789abcdef:read", [("alice", "0123456789abcdef", True)]),
        (
            "a:0123456789abcdef, b:fedcba9876543210:read",
            [("a", "0123456789abcdef", False), ("b", "fedcba9876543210", True)],
        ),
        # A key with a colon in it stays whole; only a final ":read" is the flag.
        ("a:0123:456789abcdef", [("a", "0123:456789abcdef", False)]),
        ("", []),
    ],
)
def test_admin_keys(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[tuple[str, str, bool]]
) -> None:
    monkeypatch.setenv("POLLHOOK_ADMIN_KEYS", value)
    settings = load_settings()
    shown = [(k.name, k.key.get_secret_value(), k.read_only) for k in settings.admin_keys]
    assert shown == expected
    for key in settings.admin_keys:
        assert key.key.get_secret_value() in settings.secret_values()
        assert key.key.get_secret_value() not in repr(settings)


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("alice", "name:key"),
        (":0123456789abcdef", "name:key"),
        ("alice::read", "name:key"),
        ("alice:short", "shorter than 16"),
        ("no spaces:0123456789abcdef", "invalid operator name"),
    ],
)
def test_bad_admin_keys(monkeypatch: pytest.MonkeyPatch, value: str, complaint: str) -> None:
    monkeypatch.setenv("POLLHOOK_ADMIN_KEYS", value)
    with pytest.raises(SettingsError, match=complaint):
        load_settings()


def test_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "pollhook.toml"
    config.write_text(
        "port = 9001\n[providers.jimmy]\nrate_limit_per_s = 2\n"
        '[providers.jimmy_alias]\nkind = "jimmy_soundclone"\nbase_url = "https://api.viraltok.ai"\n'
    )
    monkeypatch.setenv("POLLHOOK_CONFIG", str(config))
    monkeypatch.setenv("POLLHOOK_PORT", "9002")  # the environment wins over the file
    settings = load_settings()
    assert settings.port == 9002
    assert settings.providers["jimmy"].rate_limit_per_s == 2
    assert settings.providers["jimmy"].base_url == "https://www.jimmyai.cn"
    assert settings.providers["jimmy_alias"].base_url == "https://api.viraltok.ai"


@pytest.mark.parametrize(
    ("name", "value", "variable"),
    [
        ("POLLHOOK_PORT", "eighty", "POLLHOOK_PORT"),
        ("POLLHOOK_PORT", "70000", "POLLHOOK_PORT"),
        ("POLLHOOK_DATABASE_URL", "mysql://x", "POLLHOOK_DATABASE_URL"),
        ("POLLHOOK_API_KEYS", "no-colon", "POLLHOOK_API_KEYS"),
        ("POLLHOOK_API_KEYS", "acme:short", "POLLHOOK_API_KEYS"),
        ("POLLHOOK_WEBHOOK_ALLOW_NETWORKS", "10.0.0.0/33", "POLLHOOK_WEBHOOK_ALLOW_NETWORKS"),
        ("POLLHOOK_LOG_FORMAT", "xml", "POLLHOOK_LOG_FORMAT"),
        (
            "POLLHOOK_PROVIDERS__JIMMY__RATE_LIMIT_PER_S",
            "-1",
            "POLLHOOK_PROVIDERS__JIMMY__RATE_LIMIT_PER_S",
        ),
        (
            "POLLHOOK_PROVIDERS__JIMMY__BASE_URL",
            "ftp://x",
            "POLLHOOK_PROVIDERS__JIMMY__BASE_URL",
        ),
        ("POLLHOOK_PROVIDERS__NEW__KIND", "acme_tts", "POLLHOOK_PROVIDERS__NEW__KIND"),
        (
            "POLLHOOK_PROVIDERS__MINIMAX__MIN_POLL_INTERVAL_S",
            "100",
            "POLLHOOK_PROVIDERS__MINIMAX",
        ),
    ],
)
def test_invalid_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, variable: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert f"invalid setting {variable}" in str(info.value)


def test_allow_network_entries_may_name_a_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "POLLHOOK_WEBHOOK_ALLOW_NETWORKS",
        "127.0.0.1:9000, 127.0.0.0/8:9001, [::1]:9000, [fd00::/8]:443, 10.0.0.0/8, ::1, [::2]",
    )
    allowed = load_settings().webhook_allow_networks
    assert [(str(entry.network), entry.port) for entry in allowed] == [
        ("127.0.0.1/32", 9000),
        ("127.0.0.0/8", 9001),
        ("::1/128", 9000),
        ("fd00::/8", 443),
        ("10.0.0.0/8", None),
        ("::1/128", None),
        ("::2/128", None),
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("127.0.0.1:", "the port must be a number from 1 to 65535"),
        ("127.0.0.1:0", "the port must be a number from 1 to 65535"),
        ("127.0.0.1:65536", "the port must be a number from 1 to 65535"),
        ("127.0.0.1:http", "the port must be a number from 1 to 65535"),
        ("[::1]:", "the port must be a number from 1 to 65535"),
        ("[::1]:-1", "the port must be a number from 1 to 65535"),
        ("[::1", "is not a network or address"),
        ("[::1]9000", "is not a network or address"),
        ("[127.0.0.1]:9000", "is not a network or address"),  # brackets are for IPv6
        ("fd00::/8:443", "is not a network or address"),  # IPv6 with a port needs brackets
        ("localhost:9000", "is not a network or address"),
        ("10.0.0.0/33", "is not a network or address"),
    ],
)
def test_malformed_allow_network_entries_are_named(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("POLLHOOK_WEBHOOK_ALLOW_NETWORKS", f"10.0.0.0/8, {value}")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith("invalid setting POLLHOOK_WEBHOOK_ALLOW_NETWORKS: ")
    assert repr(value) in str(info.value)
    assert message in str(info.value)


def test_invalid_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "pollhook.toml"
    config.write_text("port = \n")
    monkeypatch.setenv("POLLHOOK_CONFIG", str(config))
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == (
        f"POLLHOOK_CONFIG: {config} is not valid TOML: Invalid value (at line 1, column 8)"
    )


def test_missing_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLLHOOK_CONFIG", "/nonexistent/pollhook.toml")
    with pytest.raises(SettingsError, match="POLLHOOK_CONFIG"):
        load_settings()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, []),
        ({"POLLHOOK_PORT": "1", "POLLHOOK_ENGINE__LEASE_S": "5"}, []),
        ({"POLLHOOK_PROVIDERS__MINIMAX_CN__KIND": "minimax_t2a"}, []),  # a new instance
        ({"POLLHOOK_CONFIG": "", "POLLHOOK_SANDBOX_PORT": "1"}, []),  # read by the CLI itself
        ({"POLLHOOK_TEST_DATABASE_URL": "x", "POLLHOOK_AUDIT_REQUIRED": "1"}, []),
        ({"OTHER_PORT": "1"}, []),
        ({"POLLHOOK_PROTS": "1"}, [("POLLHOOK_PROTS", "POLLHOOK_PORT")]),
        ({"pollhook_loglevel": "x"}, [("POLLHOOK_LOGLEVEL", "POLLHOOK_LOG_LEVEL")]),
        ({"POLLHOOK_API_KEY": "a:b"}, [("POLLHOOK_API_KEY", "POLLHOOK_API_KEYS")]),
        (
            {"POLLHOOK_ENGINE_LEASE_S": "5"},
            [("POLLHOOK_ENGINE_LEASE_S", "POLLHOOK_ENGINE__LEASE_S")],
        ),
        (
            {"POLLHOOK_PROVIDER__MINIMAX__API_KEY": "k"},
            [("POLLHOOK_PROVIDER__MINIMAX__API_KEY", "POLLHOOK_PROVIDERS__MINIMAX__API_KEY")],
        ),
        (
            {"POLLHOOK_PROVIDER__ACME__BASE_URL": "k"},
            [("POLLHOOK_PROVIDER__ACME__BASE_URL", "POLLHOOK_PROVIDERS__ACME__BASE_URL")],
        ),
        (
            {"POLLHOOK_WEBHOOK__TIMEOUT_S": "1"},
            [("POLLHOOK_WEBHOOK__TIMEOUT_S", "POLLHOOK_WEBHOOKS__TIMEOUT_S")],
        ),
        ({"POLLHOOK_ZQXJ": "1"}, [("POLLHOOK_ZQXJ", None)]),
    ],
)
def test_unknown_variables_and_their_nearest_name(
    environ: dict[str, str], expected: list[tuple[str, str | None]]
) -> None:
    found = unknown_settings(environ)
    assert [(u.name, u.suggestion) for u in found] == expected
    assert all(u.source == "environment" for u in found)


def test_unknown_keys_in_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "pollhook.toml"
    config.write_text('prot = 9001\nlog_level = "INFO"\n[engine]\nlease_s = 5\n')
    found = unknown_settings({"POLLHOOK_CONFIG": str(config)})
    assert found == [UnknownSetting("prot", str(config), "port")]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "POLLHOOK_PROVIDERS__ACME__API_KEY",
            "invalid setting POLLHOOK_PROVIDERS__ACME__KIND: required for a new provider "
            f"instance (one of: {KINDS})",
        ),
        (
            "POLLHOOK_PROVIDERS__MINIMX__API_KEY",
            "invalid setting POLLHOOK_PROVIDERS__MINIMX__KIND: required for a new provider "
            f"instance (one of: {KINDS}); or did you mean the instance "
            "MINIMAX?",
        ),
        (
            "POLLHOOK_PROVIDERS__MINIMAX__APIKEY",
            "invalid setting POLLHOOK_PROVIDERS__MINIMAX__APIKEY: no such setting "
            "(did you mean POLLHOOK_PROVIDERS__MINIMAX__API_KEY?)",
        ),
        (
            "POLLHOOK_WEBHOOKS__TIMEOUT",
            "invalid setting POLLHOOK_WEBHOOKS__TIMEOUT: no such setting "
            "(did you mean POLLHOOK_WEBHOOKS__TIMEOUT_S?)",
        ),
        ("POLLHOOK_ENGINE__ZQXJ", "invalid setting POLLHOOK_ENGINE__ZQXJ: no such setting"),
    ],
)
def test_one_line_per_mistake(monkeypatch: pytest.MonkeyPatch, name: str, message: str) -> None:
    monkeypatch.setenv(name, "x")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == message


def test_instance_without_kind_keeps_its_other_mistakes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLLHOOK_PROVIDERS__ACME__API_KEY", "x")
    monkeypatch.setenv("POLLHOOK_PROVIDERS__ACME__RATE_LIMIT_PER_S", "-1")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).splitlines() == [
        "invalid setting POLLHOOK_PROVIDERS__ACME__KIND: required for a new provider instance "
        f"(one of: {KINDS})",
        "invalid setting POLLHOOK_PROVIDERS__ACME__RATE_LIMIT_PER_S: Input should be greater "
        "than or equal to 0",
    ]


def test_every_variable_the_code_reads_is_known() -> None:
    # A POLLHOOK_* variable read outside Settings must be in OTHER_VARIABLES, or every start
    # with it set would warn about it.
    root = Path(__file__).resolve().parents[2]
    sources = [
        *root.glob("app/**/*.py"),
        *root.glob("tests/**/*.py"),
        *root.glob("bench/**/*.py"),
        *root.glob("scripts/*"),
        root / ".ci" / "run",
    ]
    reads = re.compile(
        r"""(?:environ\.get\(|environ\[|getenv\(|envvar=)f?["'](POLLHOOK_\w+)"""
        r"""|\$\{?(POLLHOOK_\w+)"""
    )
    read = {
        name for source in sources for match in reads.findall(source.read_text()) for name in match
    } - {""}
    assert "POLLHOOK_SANDBOX_PORT" in read
    assert unknown_settings(dict.fromkeys(read, "x")) == []


@pytest.mark.parametrize("key", ["sk-é-key", "sk key", "sk-key\n", "sk\x7f"])
def test_a_provider_key_that_cannot_travel_in_a_header_is_refused(
    monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv("POLLHOOK_PROVIDERS__MINIMAX__API_KEY", key)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value) == (
        "invalid setting POLLHOOK_PROVIDERS__MINIMAX__API_KEY: "
        "Value error, must be visible ASCII characters, without spaces"
    )
    assert key not in str(info.value)


@pytest.mark.parametrize(
    ("rate", "accepted"),
    [
        ("0", True),
        ("1", True),
        ("10", True),
        ("20.0", True),
        ("0.5", True),
        ("0.2", True),
        ("0.01", True),
        ("2.5", False),
        ("1.5", False),
        ("12.5", False),
        ("0.3", False),
        ("0.75", False),
    ],
)
def test_a_rate_limit_is_a_whole_number_of_requests_per_window(
    monkeypatch: pytest.MonkeyPatch, rate: str, accepted: bool
) -> None:
    # The budget's bound on every window holds for whole numbers per window only
    # (docs/architecture.md, "Why the rate budget cannot be exceeded").
    monkeypatch.setenv("POLLHOOK_PROVIDERS__JIMMY__RATE_LIMIT_PER_S", rate)
    if accepted:
        assert load_settings().providers["jimmy"].rate_limit_per_s == float(rate)
        return
    with pytest.raises(SettingsError, match=r"RATE_LIMIT_PER_S: .*whole number of requests"):
        load_settings()


@pytest.mark.parametrize(
    ("url", "target"),
    [
        (None, None),
        ("", None),
        ("file://", FileArchive(Path("/srv/pollhook/archive"))),
        ("file:///var/lib/archive", FileArchive(Path("/var/lib/archive"))),
        ("file:///var/lib/archive/", FileArchive(Path("/var/lib/archive"))),
        ("s3://pollhook-archive", S3Archive("pollhook-archive", "")),
        ("s3://pollhook-archive/", S3Archive("pollhook-archive", "")),
        ("s3://my.bucket-1/results/prod/", S3Archive("my.bucket-1", "results/prod")),
        ("s3://abc/a_b.c-d", S3Archive("abc", "a_b.c-d")),
    ],
)
def test_archive_url_names_where_the_archive_is(
    url: str | None, target: FileArchive | S3Archive | None
) -> None:
    settings = load_settings(data_dir="/srv/pollhook", archive={"url": url})
    assert settings.archive_target == target
    assert settings.archive.enabled is (target is not None)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/var/lib/archive", "must be file:///absolute/path, file://"),
        ("https://bucket.s3.amazonaws.com/x", "must be file:///absolute/path, file://"),
        ("gs://bucket", "must be file:///absolute/path, file://"),
        ("file://host/path", "a file:// URL names an absolute path and no host"),
        ("file://relative", "a file:// URL names an absolute path and no host"),
        ("file:///a?b=1", "must not hold a query, a fragment or spaces"),
        ("s3://", "'' is not a bucket name"),
        ("s3://b1", "'b1' is not a bucket name"),
        ("s3://Bucket", "'Bucket' is not a bucket name"),
        ("s3://bucket_name", "'bucket_name' is not a bucket name"),
        ("s3://-bucket", "'-bucket' is not a bucket name"),
        ("s3://a..b", "'a..b' is not a bucket name"),
        ("s3://" + "b" * 64, "is not a bucket name"),
        ("s3://key:secret@bucket", "is not a bucket name"),
        ("s3://bucket/../up", "the prefix '../up' must be segments"),
        ("s3://bucket/a//b", "the prefix 'a//b' must be segments"),
        ("s3://bucket/.hidden", "the prefix '.hidden' must be segments"),
        ("s3://bucket/a b", "must not hold a query, a fragment or spaces"),
    ],
)
def test_an_archive_url_that_names_no_archive_is_refused(
    monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    monkeypatch.setenv("POLLHOOK_ARCHIVE__URL", url)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith("invalid setting POLLHOOK_ARCHIVE__URL: ")
    assert message in str(info.value)


def test_archive_defaults() -> None:
    archive = load_settings().archive
    assert archive.url is None
    assert not archive.enabled
    assert (archive.retention_days, archive.max_file_bytes, archive.wait_s) == (30, 1024**3, 60)
    assert (archive.link_ttl_s, archive.concurrency, archive.retry_base_s) == (86_400, 8, 5)
    assert archive.link_secret is None
    assert (archive.endpoint_url, archive.region, archive.access_key_id) == (None, None, None)
    assert archive.secret_access_key is None
    assert all(p.archive for p in load_settings().providers.values())


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RETENTION_DAYS", "0"),
        ("MAX_FILE_BYTES", "0"),
        ("WAIT_S", "-1"),
        ("LINK_TTL_S", "59"),
        ("LINK_TTL_S", "604801"),
        ("CONCURRENCY", "0"),
        ("CONCURRENCY", "257"),
        ("RETRY_BASE_S", "0"),
        ("LINK_SECRET", "too-short"),
        ("ENDPOINT_URL", "127.0.0.1:9000"),
        ("LINK_TTL", "60"),
    ],
)
def test_archive_bounds_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"POLLHOOK_ARCHIVE__{name}", value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert f"invalid setting POLLHOOK_ARCHIVE__{name}" in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LINK_TTL_S", "60"),
        ("LINK_TTL_S", "604800"),
        ("WAIT_S", "0"),
        ("CONCURRENCY", "256"),
    ],
)
def test_archive_bounds_are_inclusive(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"POLLHOOK_ARCHIVE__{name}", value)
    assert getattr(load_settings().archive, name.lower()) == float(value)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, (None, None, None, None)),
        (
            {
                "AWS_ENDPOINT_URL": "http://127.0.0.1:8333/",
                "AWS_REGION": "eu-west-1",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ACCESS_KEY_ID": "AKID",
                "AWS_SECRET_ACCESS_KEY": "aws-secret",
            },
            ("http://127.0.0.1:8333", "eu-west-1", "AKID", "aws-secret"),
        ),
        ({"AWS_DEFAULT_REGION": "us-east-1"}, (None, "us-east-1", None, None)),
        ({"AWS_REGION": "", "AWS_DEFAULT_REGION": "us-east-1"}, (None, "us-east-1", None, None)),
        # pollhook's own variables win over the AWS ones, field by field.
        (
            {
                "AWS_ENDPOINT_URL": "http://127.0.0.1:1",
                "AWS_REGION": "eu-west-1",
                "AWS_ACCESS_KEY_ID": "AKID",
                "AWS_SECRET_ACCESS_KEY": "aws-secret",
                "POLLHOOK_ARCHIVE__ENDPOINT_URL": "http://127.0.0.1:2",
                "POLLHOOK_ARCHIVE__SECRET_ACCESS_KEY": "own-secret",
            },
            ("http://127.0.0.1:2", "eu-west-1", "AKID", "own-secret"),
        ),
    ],
)
def test_s3_connection_falls_back_to_the_aws_variables(
    monkeypatch: pytest.MonkeyPatch,
    environ: dict[str, str],
    expected: tuple[str | None, str | None, str | None, str | None],
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POLLHOOK_ARCHIVE__URL", "s3://pollhook-archive")
    archive = load_settings().archive
    secret = archive.secret_access_key
    assert (
        archive.endpoint_url,
        archive.region,
        archive.access_key_id,
        secret.get_secret_value() if secret else None,
    ) == expected
    assert archive.url == "s3://pollhook-archive"  # the AWS source leaves the rest alone


def test_the_config_file_wins_over_the_aws_variables(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "pollhook.toml"
    config.write_text('[archive]\nurl = "s3://pollhook-archive"\nregion = "ap-south-1"\n')
    monkeypatch.setenv("POLLHOOK_CONFIG", str(config))
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    archive = load_settings().archive
    assert (archive.url, archive.region) == ("s3://pollhook-archive", "ap-south-1")
    assert archive.endpoint_url == "http://127.0.0.1:8333"


def test_an_invalid_aws_variable_is_named_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "minio:9000")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert str(info.value).startswith(
        "invalid setting POLLHOOK_ARCHIVE__ENDPOINT_URL (or AWS_ENDPOINT_URL): "
    )


@pytest.mark.parametrize(
    "environ",
    [
        {"AWS_ACCESS_KEY_ID": "AKID"},
        {"POLLHOOK_ARCHIVE__SECRET_ACCESS_KEY": "secret"},
    ],
)
def test_an_s3_key_goes_with_its_secret(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "access_key_id and secret_access_key go together" in str(info.value)


def test_archive_secrets_reach_the_log_redactor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    monkeypatch.setenv("POLLHOOK_ARCHIVE__LINK_SECRET", "l" * 32)
    settings = load_settings()
    assert {"aws-secret-value", "l" * 32} <= set(settings.secret_values())
    assert "aws-secret-value" not in repr(settings)


def test_archive_can_be_off_per_provider_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLLHOOK_PROVIDERS__JIMMY__ARCHIVE", "false")
    providers = load_settings().providers
    assert (providers["minimax"].archive, providers["jimmy"].archive) == (True, False)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, "http://127.0.0.1:8000"),
        ({"host": "0.0.0.0", "port": 9000}, "http://0.0.0.0:9000"),
        ({"host": "::1", "port": 9000}, "http://[::1]:9000"),
        ({"public_url": "https://127.0.0.1:8443/pollhook/"}, "https://127.0.0.1:8443/pollhook"),
        ({"public_url": ""}, "http://127.0.0.1:8000"),
    ],
)
def test_public_url(overrides: dict[str, object], expected: str) -> None:
    assert load_settings(**overrides).resolved_public_url == expected


@pytest.mark.parametrize("value", ["127.0.0.1:8443", "ftp://x", "https://x/?a=1"])
def test_a_public_url_that_is_no_base_url_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("POLLHOOK_PUBLIC_URL", value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "invalid setting POLLHOOK_PUBLIC_URL" in str(info.value)


@pytest.mark.parametrize(
    ("fields", "refused"),
    [
        ({"host": "0.0.0.0", "archive": {"url": "file:///srv/archive"}}, True),
        ({"host": "::", "archive": {"url": "file://"}}, True),
        (
            {
                "host": "0.0.0.0",
                "public_url": "https://pollhook.internal",
                "archive": {"url": "file:///srv/archive"},
            },
            False,
        ),
        ({"host": "127.0.0.1", "archive": {"url": "file:///srv/archive"}}, False),
        ({"host": "0.0.0.0", "archive": {"url": "s3://bucket"}}, False),
        ({"host": "0.0.0.0"}, False),
    ],
)
def test_a_file_archive_behind_a_wildcard_bind_needs_a_public_url(
    fields: dict[str, object], refused: bool
) -> None:
    """Its links would otherwise read http://0.0.0.0:8000/...: refused at start, saying what
    to set."""
    if refused:
        with pytest.raises(SettingsError, match="set POLLHOOK_PUBLIC_URL"):
            load_settings(**fields)
    else:
        load_settings(**fields)


def test_the_dashboard_session_secret_is_long_and_reaches_the_log_redactor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POLLHOOK_UI__SESSION_SECRET", "s" * 32)
    settings = load_settings()
    assert "s" * 32 in settings.secret_values()
    assert "s" * 32 not in repr(settings)
    monkeypatch.setenv("POLLHOOK_UI__SESSION_SECRET", "short")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "POLLHOOK_UI__SESSION_SECRET" in str(info.value)
