"""The ``callbutton`` command.

``serve`` runs the server (migrating first); ``migrate`` only migrates; ``create-org``,
``create-admin``, ``create-agent`` and ``create-button`` bootstrap a tenant without a UI; ``purge``
runs the retention purge (``--dry-run`` lists what would go); ``terminate-org`` deletes an
organisation with its keys and files; ``config`` prints the configuration table. With no
``CALLBUTTON_DATABASE_URL`` every command uses the local
Postgres cluster under ``CALLBUTTON_DATA_DIR``, starting it when needed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import getpass
import json
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Coroutine, Sequence
from pathlib import Path
from typing import Any

import structlog

from server import auth, logs, recording_tools, workers
from server.app import collect_garbage, settle_heap, start
from server.config import ConfigError, Settings, markdown_table
from server.origins import OriginError, normalise_origin
from storage.accounts import DuplicateEmail
from storage.db import Database, KeystoreError
from storage.keys import KeyringError
from storage.localpg import LOCAL_POSTGRES, LocalPostgres, LocalPostgresError
from storage.migrations import MigrationError
from storage.retention import HeldError, PurgeBusy, Purger
from storage.subjects import SubjectError, terminate

log = structlog.get_logger(__name__)


class CliError(Exception):
    """A command failed in a way the user can fix; the message says how."""


@contextlib.asynccontextmanager
async def open_database(settings: Settings, *, migrate: bool = True) -> AsyncIterator[Database]:
    """The configured database, or the local cluster when none is configured."""
    local: LocalPostgres | None = None
    dsn = settings.database_url
    if not dsn:
        local = LocalPostgres(settings.data_dir / "postgres")
        dsn = await asyncio.to_thread(local.start)
        log.warning(
            LOCAL_POSTGRES,
            message="no CALLBUTTON_DATABASE_URL set: using a local Postgres cluster",
            directory=str(local.directory.resolve()),
        )
    try:
        database = await Database.connect(dsn, keystore_dsn=settings.keystore_url or None)
    except Exception:
        if local is not None:
            await asyncio.to_thread(local.stop)
        raise
    try:
        if migrate:
            await database.migrate()
        yield database
    finally:
        await database.close()
        if local is not None:
            await asyncio.to_thread(local.stop)


def run_loop(main: Coroutine[Any, Any, None], event_loop: str) -> None:
    """Run ``main`` on the event loop CALLBUTTON_EVENT_LOOP names."""
    if event_loop == "uvloop":
        import uvloop  # only imported when chosen: libuv in every process otherwise unused

        uvloop.run(main)
    else:
        asyncio.run(main)


async def serve(settings: Settings, *, demo: bool, reuse_port: bool = False) -> None:
    # Installed first: a SIGTERM while starting (joining a cluster can take seconds) stops the
    # server once started, cleanly, instead of killing it half-way.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_database(settings) as database:
        running = await start(settings, database, demo=demo, reuse_port=reuse_port)
        settle_heap()
        collector = asyncio.create_task(collect_garbage(), name="garbage-collector")
        url = running.url
        event_loop = type(asyncio.get_running_loop()).__module__.split(".")[0]  # asyncio or uvloop
        log.info(logs.SERVER_STARTED, url=url, agent_console=f"{url}/agent/", event_loop=event_loop)
        if running.demo is not None:
            print(
                f"\n  callbutton demo is running.\n"
                f"  1. Agent console: {url}/agent/   log in as {running.demo.agent_email} / "
                f"{running.demo.agent_password}\n"
                f"     and click 'Go available'.\n"
                f"  2. Demo website:  {url}/demo   click the call button.\n"
                f"  3. Admin console: {url}/admin/   log in as {running.demo.admin_email} / "
                f"{running.demo.admin_password}\n"
                f"     to manage agents, teams and buttons, and play recordings.\n",
                flush=True,
            )
        try:
            await stop.wait()
            await running.drain(settings.drain_timeout)
        finally:
            collector.cancel()
            await running.stop()
            log.info(logs.SERVER_STOPPED)


async def create_organisation(settings: Settings, name: str) -> None:
    async with open_database(settings) as database:
        organisation = await database.accounts.create_organisation(name)
        print(organisation.id)


async def create_user(
    settings: Settings, *, organisation: str, email: str, name: str, role: str, password: str
) -> None:
    try:
        auth.check_password_policy(password)
    except auth.PasswordPolicyError as exc:
        raise CliError(str(exc)) from None
    org_id = _uuid(organisation, "--org")
    async with open_database(settings) as database:
        if await database.accounts.organisation(org_id) is None:
            raise CliError(f"no organisation {org_id}")
        try:
            user = await database.accounts.create_user(
                org_id,
                email=email,
                display_name=name,
                role=role,
                password_hash=await auth.hash_password(password),
            )
        except DuplicateEmail:
            raise CliError(f"a user with the email {email} already exists") from None
        print(user.id)


async def create_button(
    settings: Settings,
    *,
    organisation: str,
    name: str,
    origins: list[str],
    ring_timeout: int | None,
    record: bool = False,
    notice: str | None = None,
) -> None:
    org_id = _uuid(organisation, "--org")
    try:
        allowed = sorted({normalise_origin(origin) for origin in origins})
    except OriginError as exc:
        raise CliError(f"--origin {exc}") from None
    async with open_database(settings) as database:
        if await database.accounts.organisation(org_id) is None:
            raise CliError(f"no organisation {org_id}")
        button = await database.buttons.create(
            org_id,
            name=name,
            allowed_origins=allowed,
            ring_timeout_s=ring_timeout,
            recording_enabled=record,
            recording_notice=notice,
        )
        print(f"button key: {button.public_key}")
        print("embed it with:")
        print(f'  <script src="{settings.origin}/widget.js" data-button="{button.public_key}" async></script>')


async def purge(settings: Settings, *, dry_run: bool, organisation: str | None) -> None:
    org_id = _uuid(organisation, "--org") if organisation else None
    async with open_database(settings) as database:
        store = recording_tools.store_for(settings, database)
        try:
            reports = await Purger(database.pool, store).run(organisation_id=org_id, dry_run=dry_run)
        except PurgeBusy as exc:
            raise CliError(str(exc)) from None
    for report in reports:
        due = ", ".join(f"{category} {count}" for category, count in report.counts.items())
        held = ", ".join(f"{category} {count}" for category, count in report.held.items() if count)
        verb = "would delete" if dry_run else "deleted"
        line = f"{report.organisation_id}: {verb} {due}"
        if held:
            line += f"; kept under legal hold: {held}"
        if report.receipt is not None:
            line += f"; receipt {report.receipt.id}"
        print(line)


async def terminate_organisation(settings: Settings, organisation: str, confirm: str, output: Path | None) -> None:
    org_id = _uuid(organisation, "--org")
    async with open_database(settings) as database:
        found = await database.accounts.organisation(org_id)
        if found is None:
            raise CliError(f"no organisation {org_id}")
        if found.name != confirm:
            raise CliError(f"--confirm must be the organisation's name exactly ({found.name!r})")
        store = recording_tools.store_for(settings, database)
        try:
            receipt = await terminate(database.pool, store, org_id, None)
        except (HeldError, SubjectError) as exc:
            raise CliError(str(exc)) from None
    document = json.dumps(receipt.document(), indent=2)
    if output is not None:
        await asyncio.to_thread(output.write_text, document + "\n", encoding="utf-8")
    print(document)


def _uuid(value: str, flag: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise CliError(f"{flag} must be an organisation id (a UUID), got {value!r}") from None


def _read_password(flag_stdin: bool) -> str:
    if flag_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise CliError("the passwords differ")
    return first


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="callbutton", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the server (applies migrations first)")
    s.add_argument("--host", help="listen address (CALLBUTTON_HOST)")
    s.add_argument("--port", type=int, help="listen port (CALLBUTTON_PORT)")
    s.add_argument("--demo", action="store_true", help="create a demo tenant and serve a demo page")
    s.add_argument(
        "--workers", type=int, default=1, help="server processes sharing the port (needs CALLBUTTON_REDIS_URL)"
    )
    s.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # a worker of --workers

    sub.add_parser("migrate", help="apply pending database migrations")
    sub.add_parser("config", help="print the configuration variables as a Markdown table")

    o = sub.add_parser("create-org", help="create an organisation; prints its id")
    o.add_argument("name")

    for role in ("admin", "agent"):
        u = sub.add_parser(f"create-{role}", help=f"create an {role}; the password is read from stdin or a prompt")
        u.add_argument("--org", required=True, help="organisation id")
        u.add_argument("--email", required=True)
        u.add_argument("--name", required=True, help="display name")
        u.add_argument("--password-stdin", action="store_true", help="read the password from stdin")

    b = sub.add_parser("create-button", help="create a call button; prints its key and embed snippet")
    b.add_argument("--org", required=True, help="organisation id")
    b.add_argument("--name", required=True)
    b.add_argument("--origin", action="append", default=[], help="website origin allowed to use it (repeat)")
    b.add_argument("--ring-timeout", type=int, help="seconds to ring before no_answer")
    b.add_argument("--record", action="store_true", help="record this button's calls (encrypted)")
    b.add_argument("--recording-notice", help="what the widget tells visitors before a recorded call")

    r = sub.add_parser("recording", help="verify, decrypt or recover a recording")
    rsub = r.add_subparsers(dest="action", required=True)
    verify = rsub.add_parser("verify", help="authenticate every segment and report the duration")
    verify.add_argument("target", metavar="ID|FILE")
    decrypt = rsub.add_parser("decrypt", help="write the playable two-channel Ogg file")
    decrypt.add_argument("target", metavar="ID|FILE")
    decrypt.add_argument("-o", "--output", type=Path, required=True)
    decrypt.add_argument("--partial", action="store_true", help="write what survived of a truncated recording")
    recover = rsub.add_parser("recover", help="complete a recording cut short by a crash (marked truncated)")
    recover.add_argument("target", metavar="ID|FILE")

    pg = sub.add_parser("purge", help="delete what the retention policies say is due (with receipts)")
    pg.add_argument("--dry-run", action="store_true", help="only list what would go, per organisation and category")
    pg.add_argument("--org", help="only this organisation (id)")

    t = sub.add_parser("terminate-org", help="delete everything of an organisation, keys and files included")
    t.add_argument("--org", required=True, help="organisation id")
    t.add_argument("--confirm", required=True, help="the organisation's name, exactly")
    t.add_argument("-o", "--receipt", type=Path, help="also write the deletion receipt (JSON) to this file")

    sub.add_parser(
        "loadtest", add_help=False, help="drive synthetic calls through a deployment (callbutton loadtest --help)"
    )

    k = sub.add_parser("keys", help="master key generation and rotation")
    ksub = k.add_subparsers(dest="action", required=True)
    generate = ksub.add_parser("generate", help="make a new master key (printed, or written to a new file)")
    generate.add_argument("-o", "--output", type=Path)
    rotate = ksub.add_parser("rotate", help="re-wrap every key under a new master key; audio is not re-encrypted")
    rotate.add_argument("--new-master-key-file", type=Path, required=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["loadtest"]:
        # A client of a deployment, not a server command: its own options, no server settings.
        from loadtest.cli import main as loadtest

        return loadtest(arguments[1:])
    args = parser().parse_args(arguments)
    try:
        settings = Settings.from_env()
        if getattr(args, "host", None):
            settings = dataclasses.replace(settings, host=args.host)
        if getattr(args, "port", None) is not None:
            settings = dataclasses.replace(settings, port=args.port)
        logs.configure(settings.log_level, settings.log_format)
        if args.command == "config":
            print(markdown_table())
        elif args.command == "serve" and args.workers != 1:
            if not 1 <= args.workers <= 256:
                raise CliError("--workers takes a number of processes from 1 to 256")
            if args.demo:
                raise CliError("--demo runs one process; leave out --workers")
            asyncio.run(workers.run(settings, args.workers))
        elif args.command == "serve":
            if args.reuse_port:
                workers.die_with_parent()
            run_loop(serve(settings, demo=args.demo, reuse_port=args.reuse_port), settings.event_loop)
        elif args.command == "migrate":
            asyncio.run(_migrate(settings))
        elif args.command == "create-org":
            asyncio.run(create_organisation(settings, args.name))
        elif args.command in ("create-admin", "create-agent"):
            password = _read_password(args.password_stdin)
            asyncio.run(
                create_user(
                    settings,
                    organisation=args.org,
                    email=args.email,
                    name=args.name,
                    role=args.command.removeprefix("create-"),
                    password=password,
                )
            )
        elif args.command == "create-button":
            asyncio.run(
                create_button(
                    settings,
                    organisation=args.org,
                    name=args.name,
                    origins=args.origin,
                    ring_timeout=args.ring_timeout,
                    record=args.record,
                    notice=args.recording_notice,
                )
            )
        elif args.command == "recording":
            return asyncio.run(_recording(settings, args))
        elif args.command == "purge":
            asyncio.run(purge(settings, dry_run=args.dry_run, organisation=args.org))
        elif args.command == "terminate-org":
            asyncio.run(terminate_organisation(settings, args.org, args.confirm, args.receipt))
        elif args.command == "keys" and args.action == "generate":
            return recording_tools.generate(args.output)
        elif args.command == "keys":
            return asyncio.run(_rotate(settings, args.new_master_key_file))
    except (
        ConfigError,
        CliError,
        LocalPostgresError,
        MigrationError,
        KeyringError,
        KeystoreError,
        recording_tools.ToolError,
    ) as exc:
        print(f"callbutton: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


async def _recording(settings: Settings, args: argparse.Namespace) -> int:
    async with open_database(settings) as database:
        store = recording_tools.store_for(settings, database)
        if args.action == "verify":
            return await recording_tools.verify(store, args.target)
        if args.action == "decrypt":
            return await recording_tools.decrypt(database, store, args.target, args.output, partial=args.partial)
        return await recording_tools.recover(store, args.target)


async def _rotate(settings: Settings, new_key_file: Path) -> int:
    async with open_database(settings) as database:
        return await recording_tools.rotate(settings, database, new_key_file)


async def _migrate(settings: Settings) -> None:
    async with open_database(settings, migrate=False) as database:
        applied = await database.migrate()
        print(f"{applied} migration(s) applied")
