"""End to end: TLS with the trust store of the environment, and HTTP proxies.

The CLI runs as a subprocess so that ``SSL_CERT_FILE`` and ``HTTP_PROXY`` are
real environment variables, read the way they are in production.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from support import (
    FAST,
    TOKEN,
    cli_env,
    disagreements,
    every_file_text,
    read_report,
    run_cli,
)

from batchcancel.sandbox import Sandbox, SandboxConfig

pytestmark = pytest.mark.e2e

IDS = [str(100_000 + n) for n in range(12)]
# A name under a reserved top-level domain that never resolves. The guard
# below makes sure it is never even looked up: only the proxy is reached.
NOWHERE = "sandbox.batchcancel.invalid"
PROXY_VARS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
              "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")
LOOPBACK_ONLY = """
import runpy, socket, sys
real = socket.getaddrinfo
def loopback_only(host, *args, **kwargs):
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise socket.gaierror(socket.EAI_NONAME, f"the test blocks {host}")
    return real(host, *args, **kwargs)
socket.getaddrinfo = loopback_only
sys.argv[0] = "batchcancel"
runpy.run_module("batchcancel", run_name="__main__", alter_sys=True)
"""


@dataclass(frozen=True, slots=True)
class Tls:
    ca_bundle: Path
    server: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    """A throwaway CA and a certificate it signed for 127.0.0.1."""
    ca = trustme.CA()
    folder = tmp_path_factory.mktemp("tls")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    return Tls(folder / "ca.pem", server)


@pytest.fixture
async def https_sandbox(tls: Tls) -> AsyncIterator[Sandbox]:
    sandbox = Sandbox(SandboxConfig(orders=len(IDS), seed=4, token=TOKEN))
    await sandbox.start("127.0.0.1", 0, ssl_context=tls.server)
    yield sandbox
    await sandbox.stop()


def write_ids(folder: Path) -> Path:
    source = folder / "ids.csv"
    source.write_text("\n".join(["order_id", *IDS]) + "\n", encoding="utf-8")
    return source


def without_tls_or_proxy_settings(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in cli_env().items()
           if k not in PROXY_VARS and k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    env.update(extra)
    return env


async def test_https_with_ssl_cert_file_trusts_the_private_ca(
    https_sandbox: Sandbox, tls: Tls, tmp_path: Path
) -> None:
    """With SSL_CERT_FILE naming the CA, the run over https agrees with the sandbox."""
    report = tmp_path / "r.csv"
    env = without_tls_or_proxy_settings(SSL_CERT_FILE=str(tls.ca_bundle),
                                        THANKSIO_BASE_URL=https_sandbox.base_url)

    done = await run_cli(["cancel", str(write_ids(tmp_path)), "--report", str(report),
                          "--base-url", https_sandbox.base_url, *FAST], env=env)

    assert https_sandbox.base_url.startswith("https://127.0.0.1:")
    assert 0 == done.code, done.stderr[-2000:]
    assert [] == disagreements(read_report(report), https_sandbox.record())
    assert len(IDS) == len(read_report(report))


async def test_https_without_the_ca_stops_with_an_error_and_exit_2(
    https_sandbox: Sandbox, tmp_path: Path
) -> None:
    """An untrusted certificate ends the run at once: Error line, exit 2, no cancel."""
    report = tmp_path / "r.csv"
    env = without_tls_or_proxy_settings(THANKSIO_BASE_URL=https_sandbox.base_url)

    done = await run_cli(["cancel", str(write_ids(tmp_path)), "--report", str(report),
                          "--base-url", https_sandbox.base_url, *FAST], env=env)
    last_line = done.stderr.strip().splitlines()[-1]

    assert 2 == done.code
    assert last_line.startswith("Error: the TLS certificate of 127.0.0.1 is not "
                                "trusted"), done.stderr[-2000:]
    assert "SSL_CERT_FILE" in last_line
    assert "Traceback" not in done.stderr
    assert {"not_attempted"} == {row["outcome"] for row in read_report(report)}
    assert 0 == https_sandbox.record()["requests"]["total"]  # no handshake passed


async def test_the_standalone_sandbox_serves_https_with_tls_flags(
    tls: Tls, tmp_path: Path
) -> None:
    """--tls-cert and --tls-key make the standalone sandbox announce an https URL."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "batchcancel.sandbox", "--orders", "3",
        "--tls-cert", str(cert), "--tls-key", str(key),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=10)
    finally:
        process.terminate()
        await process.wait()

    assert json.loads(line)["base_url"].startswith("https://127.0.0.1:")


# -- proxies -------------------------------------------------------------------


@dataclass(slots=True)
class RecordingProxy:
    """A forward HTTP proxy on loopback that sends everything to one sandbox."""

    upstream: tuple[str, int]
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ")
        headers = dict(line.split(": ", 1) for line in header_lines if line)
        body = await reader.readexactly(int(headers.get("Content-Length", "0")))
        self.seen.append((method, target, headers.get("Authorization", "")))

        # Absolute form in, origin form out, one request per connection.
        path = "/" + target.split("://", 1)[1].split("/", 1)[1]
        headers["Connection"] = "close"
        out = [f"{method} {path} {version}", *(f"{k}: {v}" for k, v in headers.items())]
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        upstream_writer.write("\r\n".join([*out, "", ""]).encode("latin-1") + body)
        writer.write(await upstream_reader.read())
        upstream_writer.close()
        await writer.drain()
        writer.close()


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[Sandbox, RecordingProxy]]:
    sandbox = Sandbox(SandboxConfig(orders=len(IDS), seed=4, token=TOKEN))
    await sandbox.start("127.0.0.1", 0)
    port = int(sandbox.base_url.split(":")[2].split("/")[0])
    proxy = RecordingProxy(("127.0.0.1", port))
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    yield sandbox, proxy
    server.close()
    await server.wait_closed()
    await sandbox.stop()


async def run_guarded(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """The CLI with every name lookup but loopback's refused in-process."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOOPBACK_ONLY, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, err.decode()


async def test_a_proxy_from_the_environment_carries_every_request(
    proxied: tuple[Sandbox, RecordingProxy], tmp_path: Path
) -> None:
    """With HTTP_PROXY set, each request to a remote host goes through the proxy."""
    sandbox, proxy = proxied
    remote = f"http://{NOWHERE}/api/v2"
    report = tmp_path / "r.csv"
    env = without_tls_or_proxy_settings(
        HTTP_PROXY=f"http://127.0.0.1:{proxy.port}",
        http_proxy=f"http://127.0.0.1:{proxy.port}", THANKSIO_BASE_URL=remote)

    code, stderr = await run_guarded(
        ["cancel", str(write_ids(tmp_path)), "--report", str(report),
         "--base-url", remote, "--allow-insecure-http", "--log-level", "debug",
         *FAST], env)
    log = sandbox.record()["request_log"]

    assert 0 == code, stderr[-2000:]
    assert [] == disagreements(read_report(report), sandbox.record())
    assert len(log) == len(proxy.seen) > 1
    assert all(target.startswith(f"http://{NOWHERE}/api/v2/")
               for _, target, _ in proxy.seen)
    assert {f"Bearer {TOKEN}"} == {auth for _, _, auth in proxy.seen}
    assert TOKEN not in stderr + every_file_text(tmp_path)


async def test_a_loopback_base_url_bypasses_the_proxy(
    proxied: tuple[Sandbox, RecordingProxy], tmp_path: Path
) -> None:
    """A loopback base URL is reached directly, whatever HTTP_PROXY says."""
    sandbox, proxy = proxied
    report = tmp_path / "r.csv"
    env = without_tls_or_proxy_settings(
        HTTP_PROXY=f"http://127.0.0.1:{proxy.port}",
        http_proxy=f"http://127.0.0.1:{proxy.port}",
        THANKSIO_BASE_URL=sandbox.base_url)

    done = await run_cli(["cancel", str(write_ids(tmp_path)), "--report", str(report),
                          "--base-url", sandbox.base_url, *FAST], env=env)

    assert 0 == done.code, done.stderr[-2000:]
    assert [] == proxy.seen
    assert len(IDS) == len(read_report(report))


async def test_plain_http_to_a_remote_host_is_still_refused_without_the_flag(
    proxied: tuple[Sandbox, RecordingProxy], tmp_path: Path
) -> None:
    """A proxy does not lift the rule: http:// off this machine needs the flag."""
    _, proxy = proxied
    remote = f"http://{NOWHERE}/api/v2"
    env = without_tls_or_proxy_settings(
        HTTP_PROXY=f"http://127.0.0.1:{proxy.port}", THANKSIO_BASE_URL=remote)

    code, stderr = await run_guarded(
        ["cancel", str(write_ids(tmp_path)), "--report", str(tmp_path / "r.csv"),
         "--base-url", remote, *FAST], env)

    assert 2 == code
    assert stderr.startswith(f"Error: base URL '{remote}' uses plain http"), stderr
    assert [] == proxy.seen
