"""The ``callbutton`` command: configuration, bootstrapping a tenant, and ``serve`` as a newcomer runs it."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from server.config import VARIABLES, ConfigError, Settings, markdown_table
from server.origins import OriginError, normalise_origin

ROOT = Path(__file__).parent.parent


def run_cli(
    args: list[str], dsn: str, stdin: str = "", extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBUTTON_")}
    env.update({"CALLBUTTON_DATABASE_URL": dsn, "CALLBUTTON_LOG_LEVEL": "warning", **(extra_env or {})})
    return subprocess.run(
        [sys.executable, "-m", "server", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=ROOT,
    )


def test_settings_from_env_and_their_errors() -> None:
    settings = Settings.from_env({"CALLBUTTON_PORT": "9000", "CALLBUTTON_ICE_HOST_ADDRESSES": "127.0.0.1, ::1"})
    assert settings.port == 9000 and settings.ice_host_addresses == ("127.0.0.1", "::1")
    assert settings.origin == "http://127.0.0.1:9000"
    for env, message in [
        ({"CALLBUTTON_PORT": "http"}, "CALLBUTTON_PORT must be an integer"),
        ({"CALLBUTTON_PORT": "70000"}, "between 0 and 65535"),
        ({"CALLBUTTON_ICE_HOST_ADDRESSES": "eth0"}, "'eth0' is not an IP address"),
        ({"CALLBUTTON_ICE_SERVERS": "stun.example.com"}, "not a stun:, turn: or turns: URL"),
        ({"CALLBUTTON_PUBLIC_URL": "https://x.example/path"}, "must be an origin"),
        ({"CALLBUTTON_RING_TIMEOUT": "-1"}, "positive number of seconds"),
        ({"CALLBUTTON_LOG_FORMAT": "xml"}, "one of console, json"),
        ({"CALLBUTTON_DATABSE_URL": "x"}, "unknown setting CALLBUTTON_DATABSE_URL"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            Settings.from_env(env)


def test_readme_lists_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "regenerate the README's table with `callbutton config`"
    for variable in VARIABLES:
        assert variable.name in readme


def test_bootstrap_a_tenant_from_the_command_line(migrated: str) -> None:
    org = run_cli(["create-org", "Acme Support"], migrated)
    assert org.returncode == 0, org.stderr
    org_id = org.stdout.strip()
    uuid.UUID(org_id)

    email = f"admin-{uuid.uuid4().hex[:6]}@acme.test"
    admin = run_cli(
        ["create-admin", "--org", org_id, "--email", email, "--name", "Ada"], migrated, stdin="a long enough secret\n"
    )
    assert admin.returncode == 0, admin.stderr
    uuid.UUID(admin.stdout.strip())
    agent = run_cli(
        ["create-agent", "--org", org_id, "--email", f"agent-{email}", "--name", "Bob", "--password-stdin"],
        migrated,
        stdin="another long secret\n",
    )
    assert agent.returncode == 0, agent.stderr

    button = run_cli(
        ["create-button", "--org", org_id, "--name", "Support", "--origin", "https://WWW.Acme.test:443/"],
        migrated,
        extra_env={"CALLBUTTON_PUBLIC_URL": "https://calls.acme.test"},
    )
    assert button.returncode == 0, button.stderr
    key = re.search(r"button key: (cb_[A-Za-z0-9_-]+)", button.stdout)
    assert key is not None
    assert f'<script src="https://calls.acme.test/widget.js" data-button="{key[1]}" async></script>' in button.stdout
    stored = asyncio.run(_allowed_origins(migrated, key[1]))
    assert stored == ["https://www.acme.test"]

    for args, stdin, message in [
        (
            ["create-admin", "--org", org_id, "--email", email, "--name", "Ada"],
            "a long enough secret\n",
            "already exists",
        ),
        (
            ["create-admin", "--org", org_id, "--email", "x@acme.test", "--name", "X"],
            "short\n",
            "at least 10 characters",
        ),
        (
            ["create-agent", "--org", "acme", "--email", "y@acme.test", "--name", "Y"],
            "a long enough secret\n",
            "must be an organisation id",
        ),
        (
            ["create-agent", "--org", str(uuid.uuid4()), "--email", "y@acme.test", "--name", "Y"],
            "a long enough secret\n",
            "no organisation",
        ),
        (["create-button", "--org", org_id, "--name", "S", "--origin", "www.acme.test"], "", "is not an origin"),
    ]:
        failed = run_cli(args, migrated, stdin=stdin)
        assert failed.returncode == 2, (args, failed.stdout, failed.stderr)
        assert message in failed.stderr, failed.stderr


async def _allowed_origins(dsn: str, key: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetchval("SELECT allowed_origins FROM buttons WHERE public_key = $1", key))
    finally:
        await conn.close()


def test_config_errors_exit_with_a_clear_message(migrated: str) -> None:
    result = run_cli(["migrate"], migrated, extra_env={"CALLBUTTON_PORT": "eighty"})
    assert result.returncode == 2
    assert "CALLBUTTON_PORT must be an integer" in result.stderr


def test_a_port_in_use_is_named_not_a_traceback(migrated: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(["serve"], migrated, extra_env={"CALLBUTTON_PORT": str(port)})
    assert result.returncode == 2
    assert f"callbutton: cannot listen on 127.0.0.1:{port} (CALLBUTTON_HOST, CALLBUTTON_PORT)" in result.stderr
    assert "Address already in use" in result.stderr and "Traceback" not in result.stderr


async def test_serve_demo_starts_a_local_postgres_and_prints_how_to_call() -> None:
    """What the README's first command does: no database configured, a local cluster, a demo tenant."""
    folder = Path(tempfile.mkdtemp(prefix="callbutton-serve-"))
    folder.chmod(0o755)  # noqa: ASYNC240 - as root the cluster runs as the postgres user, who must reach it
    data = folder / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBUTTON_")}
    # The default data folder is relative (./data): run where a newcomer would, in a folder of theirs.
    env.update({"CALLBUTTON_DATA_DIR": "data", "CALLBUTTON_PORT": "0", "CALLBUTTON_ICE_HOST_ADDRESSES": "127.0.0.1"})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "serve",
        "--demo",
        env=env,
        cwd=folder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = ""
    try:
        assert process.stdout is not None
        while "Admin console:" not in output:
            line = await asyncio.wait_for(process.stdout.readline(), 60)
            assert line, f"serve exited early:\n{output}"
            output += line.decode()
        assert "local Postgres cluster" in output
        match = re.search(r"Agent console: (http://127\.0\.0\.1:\d+)/agent/\s+log in as (\S+) / (\S+)", output)
        assert match is not None, output
        url, email, password = match.groups()
        admin = re.search(r"Admin console: \S+/admin/\s+log in as (\S+) / (\S+)", output)
        assert admin is not None, output
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{url}/demo") as demo:
                assert demo.status == 200 and "widget.js" in await demo.text()
            for who, secret, role in ((email, password, "agent"), (*admin.groups(), "admin")):
                async with http.post(
                    f"{url}/api/v1/session", json={"email": who, "password": secret}, headers={"Origin": url}
                ) as login:
                    assert login.status == 200 and (await login.json())["user"]["role"] == role
        assert (data / "postgres" / "PG_VERSION").exists()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == 0, output
    # The local cluster was stopped with the server.
    assert not (data / "postgres" / "postmaster.pid").exists()
    shutil.rmtree(folder, ignore_errors=True)


def test_origins_are_written_as_browsers_send_them() -> None:
    assert normalise_origin("https://Shop.Example.com:443/") == "https://shop.example.com"
    assert normalise_origin("http://shop.example.com:8080") == "http://shop.example.com:8080"
    assert normalise_origin("http://[::1]:8080") == "http://[::1]:8080"
    for bad in (
        "shop.example.com",
        "ftp://shop.example.com",
        "https://shop.example.com/cart",
        "https://user:pw@shop.example.com",
        "https://shop.example.com?x=1",
        "https://shop.example.com:99999",
    ):
        with pytest.raises(OriginError):
            normalise_origin(bad)
    settings = Settings(host="127.0.0.1", port=8080)
    assert settings.origins == {"http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"}
    assert Settings(public_url="https://calls.example.com").origins == {"https://calls.example.com"}
