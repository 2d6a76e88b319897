"""The REST API against its own OpenAPI document, fuzzed by schemathesis: no server error, and every
response as documented; and every admin route refuses a revoked token."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from server.app import Running
from server.config import Settings
from storage.db import Database
from tests.conftest import login_cookie, make_admin, make_tenant
from tests.test_routing import call_api

pytestmark = pytest.mark.timeout(600)

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# Routes fuzzing cannot use as meant: logging out, or revoking the fuzzer's own token (schemathesis
# finds its id in the token list), would leave every later request proving only the 401 path. Both
# have their own tests (test_api, test_admin_api).
EXCLUDED = r"^/api/v1/session$|^/api/v1/tokens/\{id\}$"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, call_rate_per_address=10_000.0)


async def test_schemathesis_finds_no_server_error_and_no_undocumented_response(
    server: Running, database: Database, tmp_path: Path
) -> None:
    (tenant,) = await make_tenant(database, recording=True)
    email, password = await make_admin(database, tenant.organisation_id)
    cookie = await login_cookie(server.url, email, password)
    status, created = await call_api(
        "POST", f"{server.url}/api/v1/tokens", cookie=cookie, origin=server.url, json={"name": "fuzzer"}
    )
    assert status == 201
    schemathesis = Path(sys.executable).parent / "schemathesis"
    process = await asyncio.create_subprocess_exec(
        str(schemathesis), "run", f"{server.url}/api/v1/openapi.json",
        "--url", server.url,
        "--checks", CHECKS,
        "--exclude-path-regex", EXCLUDED,
        "--max-examples", os.environ.get("CALLBUTTON_TEST_FUZZ_EXAMPLES", "25"),
        "--seed", "20261129",
        "--phases", "examples,coverage,fuzzing",
        "--workers", "1",
        "--generation-database", "none",
        "--header", f"Authorization: Bearer {created['secret']}",
        "--header", f"Cookie: {cookie}",
        "--no-color",
        "--report-dir", str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-20000:]
    assert "Authentication failed" not in text, text[-20000:]


async def test_every_admin_route_refuses_a_revoked_token(server: Running, database: Database) -> None:
    (tenant,) = await make_tenant(database)
    email, password = await make_admin(database, tenant.organisation_id)
    cookie = await login_cookie(server.url, email, password)
    status, created = await call_api(
        "POST", f"{server.url}/api/v1/tokens", cookie=cookie, origin=server.url, json={"name": "soon revoked"}
    )
    status, _ = await call_api(
        "DELETE", f"{server.url}/api/v1/tokens/{created['token']['id']}", cookie=cookie, origin=server.url
    )
    assert status == 200
    headers = {"Authorization": f"Bearer {created['secret']}"}
    tried = 0
    async with aiohttp.ClientSession() as http:
        for route in server.runner.app.router.routes():
            path = route.resource.canonical if route.resource is not None else ""
            if not path.startswith("/api/") or route.method in ("HEAD", "OPTIONS"):
                continue
            if path.startswith(("/api/v1/widget/", "/api/v1/call-links/{token}", "/api/v1/session", "/api/v1/openapi")):
                continue  # public routes
            url = server.url + path.replace("{id}", str(tenant.button_id)).replace(
                "{call_id}", str(tenant.button_id)
            ).replace("{recording_id}", str(tenant.button_id))
            async with http.request(route.method, url, headers=headers, json={}) as response:
                body = await response.json()
                # A clip's URL says nothing to anyone not allowed, not even that it needs a login.
                expected = 404 if path.startswith("/api/v1/clips/") else 401
                assert response.status == expected, (route.method, path, response.status, body)
                tried += 1
    assert tried >= 30
