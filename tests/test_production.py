"""Production mode: what it refuses to start without, https served by the server itself, JSON logs,
the session secret, and the deployment files (Dockerfile, deploy/compose.yaml) checked without a
Docker engine: the image's and the compose service's settings must pass ``Settings.from_env``."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import hmac
import json
import os
import re
import shlex
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server import tls
from server.app import start
from server.config import ConfigError, Settings
from storage.db import Database
from storage.keys import Keyring
from tests.conftest import Tenant, login_cookie
from tests.ports import free_port
from tests.run_keys import MASTER_KEY

ROOT = Path(__file__).parent.parent
PUBLIC_HOST = "calls.test"
PUBLIC_URL = f"https://{PUBLIC_HOST}"
SESSION_SECRET = "a session secret of enough characters, 0123456789"


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "secrets"
    folder.mkdir()
    (folder / "master_key").write_text(MASTER_KEY.to_text() + "\n")
    (folder / "session_secret").write_text(SESSION_SECRET + "\n")
    return folder


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for PUBLIC_HOST (its own CA) and its key, as PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PUBLIC_HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(PUBLIC_HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def production_env(secrets_dir: Path, certificate: tuple[Path, Path]) -> dict[str, str]:
    return {
        "CALLBUTTON_ENV": "production",
        "CALLBUTTON_MASTER_KEY_FILE": str(secrets_dir / "master_key"),
        "CALLBUTTON_SESSION_SECRET_FILE": str(secrets_dir / "session_secret"),
        "CALLBUTTON_PUBLIC_URL": PUBLIC_URL,
        "CALLBUTTON_TLS_CERT_FILE": str(certificate[0]),
        "CALLBUTTON_TLS_KEY_FILE": str(certificate[1]),
    }


def without(env: dict[str, str], *names: str, **changes: str) -> dict[str, str]:
    return {**{k: v for k, v in env.items() if k not in names}, **changes}


# Each refusal: what is taken away or changed, and what the message must name.
REFUSALS = [
    pytest.param(("CALLBUTTON_MASTER_KEY_FILE",), {}, "needs a master key: set CALLBUTTON_MASTER_KEY_FILE", id="key"),
    pytest.param(
        ("CALLBUTTON_SESSION_SECRET_FILE",),
        {},
        "needs a session secret: set CALLBUTTON_SESSION_SECRET_FILE",
        id="secret",
    ),
    pytest.param(("CALLBUTTON_PUBLIC_URL",), {}, "needs CALLBUTTON_PUBLIC_URL", id="origin"),
    pytest.param(
        (), {"CALLBUTTON_PUBLIC_URL": "http://calls.test"}, "CALLBUTTON_PUBLIC_URL must be https", id="http-origin"
    ),
    pytest.param(
        ("CALLBUTTON_TLS_CERT_FILE", "CALLBUTTON_TLS_KEY_FILE"),
        {},
        "set CALLBUTTON_TLS_CERT_FILE and CALLBUTTON_TLS_KEY_FILE for the server to serve https itself, or "
        "CALLBUTTON_TRUSTED_PROXIES",
        id="tls",
    ),
]


@pytest.mark.parametrize(("removed", "changed", "message"), REFUSALS)
def test_production_refuses_each_missing_requirement_by_name(
    secrets_dir: Path, certificate: tuple[Path, Path], removed: tuple[str, ...], changed: dict[str, str], message: str
) -> None:
    env = production_env(secrets_dir, certificate)
    settings = Settings.from_env(env)
    assert settings.production and settings.origin == PUBLIC_URL
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.from_env(without(env, *removed, **changed))


def test_production_settings_and_their_other_errors(secrets_dir: Path, certificate: tuple[Path, Path]) -> None:
    env = production_env(secrets_dir, certificate)
    # Behind a reverse proxy instead of TLS: fine.
    proxied = Settings.from_env(
        without(env, "CALLBUTTON_TLS_CERT_FILE", "CALLBUTTON_TLS_KEY_FILE", CALLBUTTON_TRUSTED_PROXIES="10.0.0.2")
    )
    assert proxied.trusted_proxies == ("10.0.0.2",) and proxied.tls_cert_file is None
    # Logs: JSON in production, human-readable in development, unless told otherwise.
    assert Settings.from_env(env).log_format == "json"
    assert Settings.from_env({}).log_format == "console"
    assert Settings.from_env({**env, "CALLBUTTON_LOG_FORMAT": "console"}).log_format == "console"
    assert Settings.from_env({"CALLBUTTON_LOG_FORMAT": "json"}).log_format == "json"
    # The secret never shows in a repr.
    assert SESSION_SECRET not in repr(Settings.from_env({"CALLBUTTON_SESSION_SECRET": SESSION_SECRET}))
    for bad, message in [
        ({"CALLBUTTON_SESSION_SECRET": "short"}, "CALLBUTTON_SESSION_SECRET: a session secret has at least 32"),
        (
            {"CALLBUTTON_SESSION_SECRET": SESSION_SECRET, "CALLBUTTON_SESSION_SECRET_FILE": "/x"},
            "CALLBUTTON_SESSION_SECRET or CALLBUTTON_SESSION_SECRET_FILE, not both",
        ),
        ({"CALLBUTTON_TLS_CERT_FILE": "/x.pem"}, "both CALLBUTTON_TLS_CERT_FILE and CALLBUTTON_TLS_KEY_FILE"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            Settings.from_env(bad)


def test_the_tls_context_accepts_tls_1_2_and_newer_and_names_a_bad_file(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    context = tls.server_context(Settings(tls_cert_file=cert, tls_key_file=key))
    assert context is not None and context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert tls.server_context(Settings()) is None
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    with pytest.raises(ConfigError, match="CALLBUTTON_TLS_CERT_FILE and CALLBUTTON_TLS_KEY_FILE are not a PEM"):
        tls.server_context(Settings(tls_cert_file=garbage, tls_key_file=key))
    with pytest.raises(ConfigError, match="CALLBUTTON_TLS_KEY_FILE: cannot read"):
        tls.server_context(Settings(tls_cert_file=cert, tls_key_file=tmp_path / "missing.pem"))


def serve_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBUTTON_")}
    env.update(extra)
    return env


def run_serve(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "serve"],
        capture_output=True,
        text=True,
        env=serve_env(env),
        timeout=60,
        cwd=cwd,
    )


@pytest.mark.parametrize(("removed", "changed", "message"), REFUSALS)
def test_serve_in_production_exits_non_zero_with_the_message(
    tmp_path: Path,
    secrets_dir: Path,
    certificate: tuple[Path, Path],
    removed: tuple[str, ...],
    changed: dict[str, str],
    message: str,
) -> None:
    env = without(production_env(secrets_dir, certificate), *removed, **changed)
    result = run_serve({**env, "CALLBUTTON_DATA_DIR": str(tmp_path)}, tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.startswith("callbutton: ") and message in result.stderr, result.stderr
    assert not (tmp_path / "postgres").exists()  # refused before anything was started


def test_serve_refuses_unreadable_or_weak_secret_files_at_start(
    migrated: str, tmp_path: Path, secrets_dir: Path, certificate: tuple[Path, Path]
) -> None:
    base = {
        **production_env(secrets_dir, certificate),
        "CALLBUTTON_DATABASE_URL": migrated,
        "CALLBUTTON_DATA_DIR": str(tmp_path),
        "CALLBUTTON_HOST": "127.0.0.1",
        "CALLBUTTON_PORT": "0",
    }
    weak = tmp_path / "weak"
    weak.write_text("too short\n")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for changes, message in [
        ({"CALLBUTTON_SESSION_SECRET_FILE": str(tmp_path / "missing")}, "CALLBUTTON_SESSION_SECRET_FILE: cannot read"),
        (
            {"CALLBUTTON_SESSION_SECRET_FILE": str(weak)},
            "CALLBUTTON_SESSION_SECRET_FILE: a session secret has at least",
        ),
        ({"CALLBUTTON_TLS_CERT_FILE": str(garbage)}, "are not a PEM certificate chain"),
        (
            {"CALLBUTTON_TURN_URLS": "turn:127.0.0.1:3478", "CALLBUTTON_TURN_SECRET_FILE": str(tmp_path / "missing")},
            "CALLBUTTON_TURN_SECRET_FILE: cannot read",
        ),
    ]:
        result = run_serve({**base, **changes}, tmp_path)
        assert result.returncode == 2, (changes, result)
        assert message in result.stderr, result.stderr


def client_context(cert: Path, **versions: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    for name, version in versions.items():
        setattr(context, name, version)
    return context


async def read_json_line(stream: asyncio.StreamReader, lines: list[dict[str, Any]]) -> dict[str, Any]:
    raw = await asyncio.wait_for(stream.readline(), 60)
    assert raw, f"the server exited; it logged {lines}"
    entry = json.loads(raw)  # every line a JSON object
    assert isinstance(entry, dict) and "event" in entry and "level" in entry and "timestamp" in entry, entry
    lines.append(entry)
    return entry


async def test_a_production_server_serves_https_with_a_host_cookie_and_logs_json(
    migrated: str, tmp_path: Path, secrets_dir: Path, certificate: tuple[Path, Path], tenant: Tenant
) -> None:
    cert, _ = certificate
    port = free_port()
    env = {
        **production_env(secrets_dir, certificate),
        "CALLBUTTON_DATABASE_URL": migrated,
        "CALLBUTTON_DATA_DIR": str(tmp_path),
        "CALLBUTTON_HOST": "127.0.0.1",
        "CALLBUTTON_PORT": str(port),
        "CALLBUTTON_ICE_HOST_ADDRESSES": "127.0.0.1",
        "CALLBUTTON_PURGE_INTERVAL": "0",
        "CALLBUTTON_LOG_LEVEL": "info",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "serve",
        env=serve_env(env),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None and process.stdout is not None
    logged: list[dict[str, Any]] = []
    try:
        while (await read_json_line(process.stderr, logged))["event"] != "server.started":
            pass
        assert logged[-1]["url"] == PUBLIC_URL
        base = f"https://127.0.0.1:{port}"
        verified = client_context(cert)
        async with aiohttp.ClientSession() as http:
            # /healthz over TLS, the certificate checked against itself as the CA, for PUBLIC_HOST.
            async with http.get(f"{base}/healthz", ssl=verified, server_hostname=PUBLIC_HOST) as health:
                assert health.status == 200
            # Plain http on the same port gets nothing.
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/healthz") as plain:
                    await plain.read()
            # Logging in from the public origin sets a __Host- cookie: Secure, HttpOnly, SameSite.
            async with http.post(
                f"{base}/api/v1/session",
                json={"email": tenant.agent_email, "password": tenant.agent_password},
                headers={"Origin": PUBLIC_URL},
                ssl=verified,
                server_hostname=PUBLIC_HOST,
            ) as login:
                assert login.status == 200, await login.text()
                [cookie] = login.cookies.values()
                assert cookie.key == "__Host-callbutton_session"
                assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
                assert cookie["path"] == "/" and not cookie["domain"]
            async with http.get(
                f"{base}/api/v1/me",
                headers={"Cookie": f"{cookie.key}={cookie.value}"},
                ssl=verified,
                server_hostname=PUBLIC_HOST,
            ) as me:
                assert me.status == 200 and (await me.json())["user"]["email"] == tenant.agent_email

        # TLS 1.2 is accepted (older versions are not: the context's minimum, tested above).
        _, writer = await asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=client_context(cert, maximum_version=ssl.TLSVersion.TLSv1_2),
            server_hostname=PUBLIC_HOST,
        )
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
        writer.close()

        # The image's health check, with the container's settings (listening on every address).
        check = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "deploy" / "healthcheck.py"),
            env=serve_env(
                {"CALLBUTTON_HOST": "0.0.0.0", "CALLBUTTON_PORT": str(port), "CALLBUTTON_TLS_CERT_FILE": "x"}
            ),
        )
        assert await check.wait() == 0
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(process.stderr.read(), 60)
        await asyncio.wait_for(process.wait(), 60)
    for line in rest.decode().splitlines():
        logged.append(json.loads(line))
    assert process.returncode == 0, logged
    events = [entry["event"] for entry in logged]
    assert "server.stopped" in events and "auth.login" in events
    # Nothing secret in the logs.
    text = json.dumps(logged)
    assert SESSION_SECRET not in text and MASTER_KEY.to_text() not in text and cookie.value not in text


def test_the_health_check_fails_without_a_server(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "healthcheck.py")],
        env=serve_env({"CALLBUTTON_HOST": "127.0.0.1", "CALLBUTTON_PORT": str(free_port())}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1 and "GET /healthz on 127.0.0.1" in result.stderr


async def session_digests(database: Database, tenant: Tenant) -> list[bytes]:
    rows = await database.pool.fetch("SELECT token_hash FROM sessions WHERE user_id = $1", tenant.agent_id)
    return [bytes(r["token_hash"]) for r in rows]


async def me_status(url: str, cookie: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/v1/me", headers={"Cookie": cookie}) as response:
        return response.status


async def test_changing_the_session_secret_ends_every_session(
    settings: Settings, database: Database, tenant: Tenant
) -> None:
    first = dataclasses.replace(settings, session_secret=SESSION_SECRET)
    running = await start(first, database)
    try:
        cookie = await login_cookie(running.url, tenant.agent_email, tenant.agent_password)
        assert await me_status(running.url, cookie) == 200
    finally:
        await running.stop()
    # The database keeps the token's HMAC under the secret, not the token or its plain hash.
    token = cookie.partition("=")[2]
    digests = await session_digests(database, tenant)
    assert hmac.new(SESSION_SECRET.encode(), token.encode(), hashlib.sha256).digest() in digests
    assert hashlib.sha256(token.encode()).digest() not in digests

    # A restart with the same secret keeps the session; with another, every session has ended.
    for secret, status in ((SESSION_SECRET, 200), ("another secret, just as long as the first", 401)):
        running = await start(dataclasses.replace(first, session_secret=secret), database)
        try:
            assert await me_status(running.url, cookie) == status
        finally:
            await running.stop()


async def test_in_development_the_session_secret_comes_from_the_master_key(
    settings: Settings, database: Database, tenant: Tenant
) -> None:
    assert not settings.session_secret and settings.session_secret_file is None
    running = await start(settings, database)
    try:
        cookie = await login_cookie(running.url, tenant.agent_email, tenant.agent_password)
    finally:
        await running.stop()
    derived = Keyring(database.keystore_pool, MASTER_KEY).derive("session token digests")
    token = cookie.partition("=")[2]
    assert hmac.new(derived, token.encode(), hashlib.sha256).digest() in await session_digests(database, tenant)
    running = await start(settings, database)  # the same master key: sessions survive a restart
    try:
        assert await me_status(running.url, cookie) == 200
    finally:
        await running.stop()


# --- the deployment files, without a Docker engine ---------------------------------------------


def dockerfile_instructions() -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    logical = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    for line in logical.splitlines():
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            yield instruction.upper(), arguments.strip()


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, arguments in dockerfile_instructions():
        if instruction == "ENV":
            for item in shlex.split(arguments):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def test_the_image_installs_the_pinned_project_as_ci_does_and_runs_serve_as_a_user() -> None:
    instructions = list(dockerfile_instructions())
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("python:3.11-slim")
    # pip installs nothing but pip itself and this project, whose dependencies pyproject.toml pins.
    runs = " && ".join(arguments for instruction, arguments in instructions if instruction == "RUN")
    pip_commands = re.findall(r"-m pip install ([^&]+)", runs)
    assert pip_commands, runs
    installed = [arg for command in pip_commands for arg in shlex.split(command) if not arg.startswith("-")]
    assert installed == ["pip", "."], pip_commands
    # The same steps as ./dev setup (what CI runs), without the test extras.
    dev = (ROOT / "dev").read_text()
    assert "-m pip install --quiet --upgrade pip" in dev and "-m pip install --quiet -e '.[test]'" in dev
    assert [c.strip() for c in pip_commands] == ["--quiet --upgrade pip", "--quiet -e ."]
    pyproject = (ROOT / "pyproject.toml").read_text()
    dependencies = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.M | re.S)
    assert dependencies is not None
    for requirement in re.findall(r'"([^"]+)"', dependencies[1]):
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.]*", requirement), f"{requirement} is not pinned"
    # Every folder it copies exists; it runs as a user of its own; it checks /healthz.
    for instruction, arguments in instructions:
        if instruction == "COPY":
            for source in shlex.split(arguments)[:-1]:
                if not source.startswith("--"):
                    assert (ROOT / source).exists(), source
    [user] = [arguments for instruction, arguments in instructions if instruction == "USER"]
    assert user not in ("root", "0") and not user.startswith("0:")
    [health] = [arguments for instruction, arguments in instructions if instruction == "HEALTHCHECK"]
    assert "callbutton-healthcheck" in health
    entry = dict(instructions)
    assert json.loads(entry["ENTRYPOINT"]) == ["callbutton"] and json.loads(entry["CMD"]) == ["serve"]
    assert "VOLUME" in entry and json.loads(entry["VOLUME"]) == [image_env()["CALLBUTTON_DATA_DIR"]]
    # Nothing but what it copies goes into the build context: no .venv, data or secrets.
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert ignore[0] == "*"
    assert not any(line.startswith("!") and any(w in line for w in ("secrets", "data", ".venv")) for line in ignore)


def test_the_compose_service_passes_production_settings_with_the_secrets_it_mounts() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"callbutton", "postgres", "keystore", "redis", "coturn"} <= set(services)
    service = services["callbutton"]
    env = {**image_env(), **{k: str(v) for k, v in service["environment"].items()}}
    # Every variable is one the server knows, and production's requirements are met.
    settings = Settings.from_env(env)
    assert settings.production and settings.public_url.startswith("https://")
    assert settings.tls_cert_file is not None or settings.trusted_proxies
    assert settings.log_format == "json"
    # Each file setting names a secret the service mounts, and the secret is defined.
    mounted = set(service["secrets"])
    for name, value in env.items():
        if name.endswith("_FILE"):
            assert value.startswith("/run/secrets/"), (name, value)
            secret = value.removeprefix("/run/secrets/")
            assert secret in mounted and secret in compose["secrets"], (name, secret)
    for required in ("master_key", "session_secret"):
        assert required in mounted
    # The key store is a Postgres of its own, not a database beside the main one.
    main_socket = re.search(r"host=([^&]+)", settings.database_url)
    keys_socket = re.search(r"host=([^&]+)", settings.keystore_url)
    assert main_socket and keys_socket and main_socket[1] != keys_socket[1]
    volumes = dict(volume.split(":")[1::-1] for volume in service["volumes"])
    assert "postgres" in volumes[main_socket[1]] and "keystore" in volumes[keys_socket[1]]
    assert any(v.startswith(volumes[main_socket[1]] + ":") for v in services["postgres"]["volumes"])
    assert any(v.startswith(volumes[keys_socket[1]] + ":") for v in services["keystore"]["volumes"])
    # coturn shares the TURN secret, with the documented configuration and its entrypoint.
    coturn = services["coturn"]
    assert "turn_secret" in coturn["secrets"] and env["CALLBUTTON_TURN_SECRET_FILE"] == "/run/secrets/turn_secret"
    assert "./coturn:/etc/coturn:ro" in coturn["volumes"]
    assert coturn["entrypoint"] == ["/bin/sh", "/etc/coturn/entrypoint.sh"]
    # Redis is there for the scale-out, off by default.
    assert services["redis"]["profiles"] == ["scale-out"]
    # Secrets come from files in deploy/secrets/, which git ignores.
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    assert (ROOT / "deploy" / "secrets" / ".gitignore").read_text().splitlines()[1:] == ["*", "!.gitignore"]
