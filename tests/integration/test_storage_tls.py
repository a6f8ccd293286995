"""PostgreSQL beyond loopback is reached with sslmode=verify-full (#28 item 12): a real
cluster serving TLS with a certificate from a test CA, reached by this machine's host name
(a name, not a loopback address, that resolves to loopback: the traffic stays on this
machine). asyncpg's default, prefer, connected to a server whose certificate nobody checked,
and to a server without TLS in plaintext, without a word."""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from keeperd.checks import storage_issues
from keeperd.config import Config, ConfigError, is_loopback, parse_config
from keeperd.storage.admin import StorageError, open_configured
from tests.postgres import PostgresServer, postgres_cluster

MINIMAL = {
    "state_dir": "/tmp/keeperd-test",
    "chains": [{"name": "devnet", "chain_id": 31337, "rpc_urls": ["http://127.0.0.1:8545"]}],
}


def remote_name() -> str:
    """A host name of this machine that is not a loopback address as written."""
    name = socket.gethostname()
    try:
        resolved = {a[4][0] for a in socket.getaddrinfo(name, 5432, proto=socket.IPPROTO_TCP)}
    except OSError:
        resolved = set()
    if is_loopback(name) or not resolved or not all(is_loopback(a) for a in resolved):
        pytest.skip(f"this machine's name {name!r} does not resolve to loopback only")
    return name


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(where: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
            "-subj", f"/CN={name}", cwd=where)


@pytest.fixture(scope="module")
def tls_postgres(tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[PostgresServer, str, Path]]:
    """A cluster serving TLS with a certificate for this machine's name, signed by a test
    CA; yields it, the name, and the directory holding ca.pem (that CA) and other-ca.pem
    (one that did not sign it)."""
    name = remote_name()
    pki = tmp_path_factory.mktemp("pki")
    make_ca(pki, "ca")
    make_ca(pki, "other-ca")
    (pki / "san.ext").write_text(f"subjectAltName=DNS:{name}\n")

    def certificate(root: Path) -> dict[str, str]:
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", str(root / "server.key"), "-out", "server.csr", "-subj",
                f"/CN={name}", cwd=pki)
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out",
                str(root / "server.crt"), cwd=pki)
        (root / "server.key").chmod(0o600)
        return {"ssl_cert_file": str(root / "server.crt"),
                "ssl_key_file": str(root / "server.key")}

    with postgres_cluster(certificate) as server:
        # (ssl itself by ALTER SYSTEM, not on the command line, which a reload cannot undo:
        # `plaintext` below switches it off)
        asyncio.run(set_ssl(server, "on"))
        yield server, name, pki


async def set_ssl(server: PostgresServer, value: str) -> None:
    conn = await asyncpg.connect(server.dsn)
    try:
        await conn.execute(f"ALTER SYSTEM SET ssl = {value}")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    for _ in range(100):  # (the reload is a signal: a new session sees it once it is done)
        conn = await asyncpg.connect(server.dsn)
        try:
            if await conn.fetchval("SHOW ssl") == value:
                return
        finally:
            await conn.close()
        await asyncio.sleep(0.05)
    raise AssertionError(f"PostgreSQL did not take ssl = {value}")


@pytest.fixture(autouse=True)
def no_client_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ~/.postgresql/root.crt nor PG* variables of the machine running the tests."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("PGSSLMODE", "PGSSLROOTCERT", "PGHOST", "PGPORT", "PGSERVICEFILE"):
        monkeypatch.delenv(var, raising=False)


def config(url: str, **storage: Any) -> Config:
    return parse_config({**MINIMAL, "storage": {"url": url, **storage}}, "test.yaml", {})


async def ssl_in_use(cfg: Config) -> bool:
    """Connect as keeperd does (`keeperd storage ...`, the same DSN as `run`): whether the
    session is encrypted."""
    db: Any = await open_configured(cfg)
    try:
        return bool(await db.conn.fetchval(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"))
    finally:
        await db.close()


async def test_a_remote_host_is_held_to_verify_full(tls_postgres: Any) -> None:
    server, name, pki = tls_postgres
    url = f"postgresql://postgres@{name}:{server.port}/postgres"
    # No CA given: asyncpg's prefer connected, checking nothing; now refused, saying why.
    with pytest.raises(StorageError) as refused:
        await ssl_in_use(config(url))
    assert "sslrootcert" in str(refused.value) and "allow_insecure_transport" in str(
        refused.value)
    # The CA that signed the server's certificate: verified, encrypted.
    assert await ssl_in_use(config(f"{url}?sslrootcert={pki / 'ca.pem'}"))
    # check-config makes the same connection.
    assert await storage_issues(config(f"{url}?sslrootcert={pki / 'ca.pem'}")) == []
    issues = await storage_issues(config(url))
    assert [i.path for i in issues] == ["storage.url"] and "sslrootcert" in issues[0].message


async def test_a_certificate_from_another_ca_is_refused(tls_postgres: Any) -> None:
    """Someone on the path answering with a certificate of their own (here: from a CA the
    operator did not name): prefer would have sent the password to it."""
    server, name, pki = tls_postgres
    url = (f"postgresql://postgres@{name}:{server.port}/postgres"
           f"?sslrootcert={pki / 'other-ca.pem'}")
    with pytest.raises(StorageError) as refused:
        await ssl_in_use(config(url))
    assert "certificate verify failed" in str(refused.value)
    assert "sslrootcert" in str(refused.value)


async def test_the_operator_may_accept_an_unverified_server(tls_postgres: Any) -> None:
    server, name, _ = tls_postgres
    url = f"postgresql://postgres@{name}:{server.port}/postgres"
    assert await ssl_in_use(config(url, allow_insecure_transport=True))  # (prefer: TLS here)
    assert await ssl_in_use(config(f"{url}?sslmode=require", allow_insecure_transport=True))


def test_a_weaker_sslmode_to_a_remote_host_is_a_config_error() -> None:
    for mode in ("disable", "prefer", "require", "verify-ca"):
        with pytest.raises(ConfigError) as caught:
            config(f"postgresql://keeperd@db.example.com/keeperd?sslmode={mode}")
        (issue,) = caught.value.issues
        assert f"sslmode={mode}" in issue.message and "verify-full" in issue.message
        assert "storage.allow_insecure_transport: true" in issue.message
        config(f"postgresql://keeperd@db.example.com/keeperd?sslmode={mode}",
               allow_insecure_transport=True)
    # A name that merely starts like a loopback address is a remote host.
    with pytest.raises(ConfigError):
        config("postgresql://keeperd@127.evil.example/keeperd?sslmode=disable")
    remote = config("postgresql://keeperd@db.example.com:5433/keeperd?application_name=k")
    assert remote.storage.connect_url.endswith("?application_name=k&sslmode=verify-full")
    several = config("postgresql://keeperd@127.0.0.1:5432,db.example.com:5432/keeperd")
    assert several.storage.connect_url.endswith("?sslmode=verify-full")


def test_loopback_and_unix_sockets_keep_todays_behaviour() -> None:
    for url in ("postgresql://keeperd@127.0.0.1/keeperd",
                "postgresql://keeperd@[::1]:5432/keeperd?sslmode=disable",
                "postgresql://keeperd@localhost/keeperd?sslmode=prefer",
                "postgresql://keeperd@%2Frun%2Fpostgresql/keeperd?sslmode=disable",
                "postgresql://keeperd@/keeperd?host=/run/postgresql"):
        assert config(url).storage.connect_url == url


async def test_loopback_and_socket_connect_as_before(tls_postgres: Any) -> None:
    server, _, _ = tls_postgres
    assert await ssl_in_use(config(f"postgresql://postgres@127.0.0.1:{server.port}/postgres"))
    socket_url = f"postgresql://postgres@/postgres?host={server.root}&port={server.port}"
    assert not await ssl_in_use(config(socket_url))  # (no TLS over a socket)


@pytest.fixture
async def plaintext(tls_postgres: Any) -> AsyncIterator[Any]:
    """The same cluster with TLS switched off (a misconfigured server, or an attacker's
    that offers none), switched back on after."""
    await set_ssl(tls_postgres[0], "off")
    try:
        yield tls_postgres
    finally:
        await set_ssl(tls_postgres[0], "on")


async def test_a_remote_server_without_tls_is_refused(plaintext: Any) -> None:
    """prefer fell back to plaintext: the password, the journal and the lease in clear."""
    server, name, pki = plaintext
    url = f"postgresql://postgres@{name}:{server.port}/postgres?sslrootcert={pki / 'ca.pem'}"
    with pytest.raises(StorageError):
        await ssl_in_use(config(url))
    # Loopback, as before, connects whatever the server offers.
    assert not await ssl_in_use(config(
        f"postgresql://postgres@127.0.0.1:{server.port}/postgres"))


def test_the_password_goes_in_without_touching_the_hosts() -> None:
    """(It rebuilt the host from `hostname`: an [IPv6] literal lost its brackets, a second
    host and a socket directory's case were lost.)"""
    from keeperd.storage.lease import with_password

    for hosts in ("[::1]:5432", "db-a.example.com:5432,db-b.example.com:5433",
                  "%2Fvar%2FRun%2Fpostgresql", "Db.Example.com"):
        dsn = with_password(f"postgresql://keeperd@{hosts}/keeperd?sslmode=verify-full",
                            "p@ss:word")
        assert dsn == (f"postgresql://keeperd:p%40ss%3Aword@{hosts}/keeperd"
                       "?sslmode=verify-full")


def test_keeperd_run_refuses_an_unverified_server_in_one_line(tls_postgres: Any,
                                                              devnet: Any,
                                                              tmp_path: Path) -> None:
    """`keeperd run` against the server with no CA to check it by: exit 2 and one line that
    says what to do (asyncpg's ClientConfigurationError escaped as a traceback)."""
    import os
    import sys

    import yaml

    from tests.integration.test_daemon import ROOT, write_config

    server, name, _ = tls_postgres
    path, _ = write_config(tmp_path, devnet, [devnet.manifest["rpc_url"]])
    data = yaml.safe_load(path.read_text())
    data["storage"] = {"url": f"postgresql://postgres@{name}:{server.port}/postgres"}
    data["keeper"] = {"mode": "alert-only"}
    path.write_text(yaml.safe_dump(data))
    run = subprocess.run([sys.executable, "-m", "keeperd", "run", "--config", str(path),
                          "--duration", "20"],  # (the old code ran on: let it stop)
                         capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env=dict(os.environ, HOME=str(tmp_path)))
    assert run.returncode == 2, run.stderr[-2000:]
    (line,) = [ln for ln in run.stderr.splitlines() if ln.startswith("keeperd: ")]
    assert "sslrootcert" in line and "allow_insecure_transport" in line
    assert "Traceback" not in run.stderr
