"""The calls view at a million calls: keyset pages against OFFSET pages, same data, same run.

Seeds one organisation with N calls over a year (several buttons, twenty agents, the usual mix of
outcomes, visitor details, ratings, recordings) and a second organisation with a twentieth as many,
then times ``CallSearch.page`` (keyset, the view's query) and ``CallSearch.offset_page`` (the same
page by OFFSET) for first pages and for pages deep in the data, each the median of several runs
after a warm-up.

    .venv/bin/python bench/calls_page.py [--calls 1000000] [--dsn URL] [--keep] [--explain]

Without ``--dsn`` (or ``CALLBUTTON_DATABASE_URL``) a throwaway Postgres cluster is started the way
the tests start one; either way the run gets a database of its own, dropped at the end unless
``--keep``. Target: every keyset page in <= 20 ms. Results go in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import asyncpg
from common import admin, database_dsn
from tqdm import tqdm

from storage.calls import CallFilter, CallSearch, _where
from storage.db import Database
from storage.localpg import server_for

TARGET_MS = 20.0
LIMIT = 50
START = datetime.datetime(2025, 11, 29, tzinfo=datetime.UTC)
CHUNK = 50_000

FIRST_NAMES = [
    "Maria", "Mark", "Martin", "Marta", "Anna", "Andrew", "Aisha", "Ben", "Chloe", "Daniel", "Elena", "Emma",
    "Fatima", "George", "Hannah", "Ibrahim", "Jack", "James", "Julia", "Karim", "Laura", "Leo", "Lucy", "Mohammed",
    "Nina", "Oliver", "Olivia", "Paul", "Priya", "Rachel", "Samuel", "Sara", "Sophie", "Thomas", "Tom", "Uma",
    "Victor", "Wei", "Yusuf", "Zoe",
]  # fmt: skip
LAST_NAMES = [
    "Smith", "Jones", "Kowalski", "Nowak", "Garcia", "Martinez", "Rossi", "Bianchi", "Muller", "Schmidt",
    "Dubois", "Martin", "Khan", "Ahmed", "Patel", "Singh", "Chen", "Wang", "Kim", "Park", "Silva", "Santos",
    "Jansen", "de Vries", "Novak", "Horvat", "Ivanov", "Popescu", "Nagy", "Larsen", "Hansen", "Berg", "Murphy",
    "Kelly", "Walsh", "O'Brien", "Taylor", "Brown", "Wilson", "Evans",
]  # fmt: skip
PAGES = ["", "pricing", "checkout", "help/returns", "help/delivery", "account", "products/kettle", "contact"]
COMMENTS = ["Quick and helpful", "Sorted my order", "Long wait", "Very friendly", "Did not solve it"]

# One statement per chunk of calls: draw the random numbers per row (the volatile subquery is not
# flattened, so each random() is drawn once per row), derive the outcome, build the columns.
# $1 organisation, $2..$3 the chunk's rows of $4, $5 buttons (the first busiest), $6 agents (the first
# busiest), $7 first names, $8 last names, $9 page paths, $10 comments, $11 the year's start.
_SEED_CALLS = """
INSERT INTO calls (id, organisation_id, button_id, agent_id, state, end_reason, page_url, created_at, queued_at,
                   answered_at, ended_at, visitor_name, visitor_email, visitor_phone, rating, rating_comment)
SELECT gen_random_uuid(), $1::uuid,
       ($5::uuid[])[1 + floor(cardinality($5::uuid[]) * r_button ^ 2)::int],
       CASE WHEN outcome = 'answered' THEN ($6::uuid[])[1 + floor(cardinality($6::uuid[]) * r_agent ^ 1.5)::int] END,
       'ended',
       CASE outcome
           WHEN 'answered' THEN CASE WHEN r_reason < 0.55 THEN 'visitor_hangup' ELSE 'agent_hangup' END
           WHEN 'missed' THEN CASE WHEN r_reason < 0.8 THEN 'rejected' WHEN r_reason < 0.95 THEN 'failed'
                                   ELSE 'shutdown' END
           ELSE outcome
       END,
       'https://shop.example.com/' || ($9::text[])[1 + floor(cardinality($9::text[]) * r_page)::int],
       created_at,
       created_at + interval '1 second',
       CASE WHEN outcome = 'answered' THEN created_at + make_interval(secs => 3 + 60 * r_wait ^ 2) END,
       created_at + CASE outcome
           WHEN 'answered' THEN make_interval(secs => 23 + 60 * r_wait ^ 2 + 1200 * r_talk ^ 2)
           WHEN 'no_answer' THEN interval '300 seconds'
           ELSE make_interval(secs => 2 + 120 * r_wait)
       END,
       CASE WHEN r_name < 0.45 THEN first_name || ' ' || last_name END,
       CASE WHEN r_email < 0.30
            THEN lower(replace(first_name || '.' || last_name, ' ', '')) || '.' || floor(r_number * 10000)::int
                 || '@example.org' END,
       CASE WHEN r_phone < 0.20 THEN
           CASE WHEN r_format < 0.5 THEN '+44 7' || substr(digits, 1, 3) || ' ' || substr(digits, 4)
                WHEN r_format < 0.8 THEN '07' || substr(digits, 1, 3) || ' ' || substr(digits, 4)
                ELSE '+447' || digits END
       END,
       CASE WHEN rated THEN 1 + floor(5 * r_rating ^ 0.5)::int END,
       CASE WHEN rated AND r_comment < 0.3
            THEN ($10::text[])[1 + floor(cardinality($10::text[]) * r_comment / 0.3)::int] END
FROM (
    SELECT draws.*,
           CASE WHEN r_outcome < 0.70 THEN 'answered' WHEN r_outcome < 0.85 THEN 'abandoned'
                WHEN r_outcome < 0.93 THEN 'missed' ELSE 'no_answer' END AS outcome,
           r_outcome < 0.70 AND r_rated < 0.2 AS rated,
           ($7::text[])[1 + floor(cardinality($7::text[]) * r_first)::int] AS first_name,
           ($8::text[])[1 + floor(cardinality($8::text[]) * r_last)::int] AS last_name,
           lpad(floor(r_digits * 1e9)::bigint::text, 9, '0') AS digits
    FROM (
        SELECT $11::timestamptz + interval '365 days' * ((i + random()) / $4::int) AS created_at,
               random() AS r_outcome, random() AS r_reason, random() AS r_button, random() AS r_agent,
               random() AS r_page, random() AS r_wait, random() AS r_talk, random() AS r_name,
               random() AS r_first, random() AS r_last, random() AS r_email, random() AS r_number,
               random() AS r_phone, random() AS r_format, random() AS r_digits, random() AS r_rated,
               random() AS r_rating, random() AS r_comment
        FROM generate_series($2::int, $3::int) AS i
    ) draws
) calls
"""

# Answered calls of buttons that record: mostly complete, some truncated, some deleted. (Keys live in the key
# store; the calls view only asks whether a recording exists.)
_SEED_RECORDINGS = """
INSERT INTO recordings (id, organisation_id, call_id, state, started_at, ended_at, duration_ms, byte_size,
                        ciphertext_sha256)
SELECT gen_random_uuid(), c.organisation_id, c.id, c.state, c.answered_at, c.ended_at,
       (extract(epoch FROM c.ended_at - c.answered_at) * 1000)::int,
       (extract(epoch FROM c.ended_at - c.answered_at) * 10000)::bigint,
       sha256(uuid_send(c.id))
FROM (
    SELECT c.*, CASE WHEN r < 0.03 THEN 'deleted' WHEN r < 0.05 THEN 'truncated' ELSE 'complete' END AS state
    FROM (SELECT c.organisation_id, c.id, c.answered_at, c.ended_at, random() AS r
          FROM calls c JOIN buttons b ON b.id = c.button_id
          WHERE b.recording_enabled AND c.outcome = 'answered') c
) c
"""


@dataclass(frozen=True)
class Tenant:
    organisation_id: uuid.UUID
    buttons: list[uuid.UUID]  # the busiest first
    agents: list[uuid.UUID]  # the busiest first


@dataclass(frozen=True)
class Case:
    name: str
    filters: CallFilter
    deep: bool = False


@dataclass(frozen=True)
class Timing:
    ms: float  # the median
    plan: str  # generic, custom or mixed: how Postgres planned the prepared statement in the timed runs


@dataclass(frozen=True)
class Result:
    case: Case
    rows: int
    offset_rows: int
    keyset: Timing
    offset: Timing


async def tenant(database: Database, name: str, buttons: int, agents: int, recording: set[int]) -> Tenant:
    organisation = await database.accounts.create_organisation(name)
    button_ids = [
        (
            await database.buttons.create(
                organisation.id,
                name=f"Button {index}",
                allowed_origins=["https://shop.example.com"],
                recording_enabled=index in recording,
            )
        ).id
        for index in range(buttons)
    ]
    agent_ids = [
        (
            await database.accounts.create_user(
                organisation.id,
                email=f"agent{index}-{uuid.uuid4().hex[:8]}@bench.example.test",
                display_name=f"Agent {index}",
                role="agent",
                password_hash="not-a-hash",  # nobody logs in
            )
        ).id
        for index in range(agents)
    ]
    return Tenant(organisation.id, button_ids, agent_ids)


async def seed(database: Database, calls: int) -> Tenant:
    """The organisation measured (``calls`` calls) and another with a twentieth as many, inserted in
    turns of a few days' calls each, so that on disk they mix as in one shared table; then VACUUM ANALYZE."""
    main = await tenant(database, "Bench", buttons=6, agents=20, recording={1, 3})
    other = await tenant(database, "Other", buttons=2, agents=4, recording={0})
    plan = [(main, calls), (other, calls // 20)]
    phases: dict[str, float] = {}
    started = time.perf_counter()
    chunks = max(1, -(-calls // CHUNK))
    async with database.pool.acquire() as conn:
        await conn.execute("SET synchronous_commit = off")
        with tqdm(total=sum(n for _, n in plan), unit=" calls", unit_scale=True, desc="calls") as progress:
            for chunk in range(chunks):
                for owner, total in plan:
                    first, last = chunk * total // chunks, (chunk + 1) * total // chunks - 1
                    if last < first:
                        continue
                    await conn.execute(
                        _SEED_CALLS,
                        owner.organisation_id,
                        first,
                        last,
                        total,
                        owner.buttons,
                        owner.agents,
                        FIRST_NAMES,
                        LAST_NAMES,
                        PAGES,
                        COMMENTS,
                        START,
                    )
                    progress.update(last - first + 1)
        phases["calls"] = time.perf_counter() - started
        mark = time.perf_counter()
        recordings = await conn.execute(_SEED_RECORDINGS)
        phases["recordings"] = time.perf_counter() - mark
        mark = time.perf_counter()
        await conn.execute("VACUUM (ANALYZE) calls, recordings")
        phases["vacuum analyze"] = time.perf_counter() - mark
    elapsed = time.perf_counter() - started
    size = await database.pool.fetchval("SELECT pg_size_pretty(pg_total_relation_size('calls'))")
    print(
        f"seeded {sum(n for _, n in plan):,} calls and {int(recordings.split()[-1]):,} recordings in {elapsed:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items())
        + f"); calls table with indexes {size}"
    )
    return main


async def existing(database: Database) -> Tenant:
    """The organisation with the most calls in a database an earlier ``--keep`` run seeded."""
    organisation_id = await database.pool.fetchval(
        "SELECT organisation_id FROM calls GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
    )
    if organisation_id is None:
        raise SystemExit("that database holds no calls: seed one with --keep first")
    agents = await database.pool.fetch(
        "SELECT agent_id FROM calls WHERE organisation_id = $1 AND agent_id IS NOT NULL "
        "GROUP BY 1 ORDER BY count(*) DESC",
        organisation_id,
    )
    buttons = await database.pool.fetch(
        "SELECT button_id FROM calls WHERE organisation_id = $1 GROUP BY 1 ORDER BY count(*) DESC", organisation_id
    )
    return Tenant(organisation_id, [r["button_id"] for r in buttons], [r["agent_id"] for r in agents])


async def describe(database: Database, organisation_id: uuid.UUID) -> int:
    rows = await database.pool.fetch(
        "SELECT outcome, count(*) AS n FROM calls WHERE organisation_id = $1 GROUP BY 1 ORDER BY 2 DESC",
        organisation_id,
    )
    total = int(sum(r["n"] for r in rows))
    print(f"organisation measured: {total:,} calls; " + ", ".join(f"{r['outcome']} {r['n'] / total:.0%}" for r in rows))
    return total


async def cases(database: Database, org: Tenant) -> list[Case]:
    """The filters an admin picks, with values drawn from the data: a mid-volume agent, the busiest
    button, a name prefix many visitors share, a full name few do, an email and a phone on file."""
    pool = database.pool
    agent = org.agents[len(org.agents) // 2]
    email = await pool.fetchval(
        "SELECT visitor_email FROM calls WHERE organisation_id = $1 AND visitor_email IS NOT NULL "
        "ORDER BY created_at LIMIT 1 OFFSET 1000",
        org.organisation_id,
    )
    phone = await pool.fetchval(
        "SELECT visitor_phone FROM calls WHERE organisation_id = $1 AND visitor_phone LIKE '+44 %' "
        "ORDER BY created_at LIMIT 1 OFFSET 1000",
        org.organisation_id,
    )
    found = [
        Case("all calls", CallFilter()),
        Case("all calls", CallFilter(), deep=True),
        Case("agent + answered", CallFilter(agent_id=agent, outcome="answered")),
        Case("agent + answered", CallFilter(agent_id=agent, outcome="answered"), deep=True),
        Case("button", CallFilter(button_id=org.buttons[0])),
        Case("button", CallFilter(button_id=org.buttons[0]), deep=True),
        Case("outcome no_answer", CallFilter(outcome="no_answer")),
        Case("outcome no_answer", CallFilter(outcome="no_answer"), deep=True),
        Case("rating 1", CallFilter(rating=1)),
        Case("has recording", CallFilter(has_recording=True)),
        Case("q name prefix 'mar'", CallFilter(search="mar")),
        Case("q name prefix 'mar'", CallFilter(search="mar"), deep=True),
        Case("q full name 'maria kowalsk'", CallFilter(search="maria kowalsk")),
    ]
    if email is not None:  # searched in capitals: emails match in any case
        found.append(Case("q email", CallFilter(search=email.upper())))
    if phone is not None:  # searched with other punctuation: phones match by their digits
        found.append(Case("q phone", CallFilter(search=phone.replace(" ", "-"))))
    return found


async def position(
    pool: Any, organisation_id: uuid.UUID, filters: CallFilter, pivot: asyncpg.Record
) -> tuple[int, tuple[datetime.datetime, uuid.UUID]]:
    """Where a reader paging through ``filters`` is when the pages reach ``pivot``: how many rows
    precede the next page (the OFFSET) and the last row of the previous page (the keyset cursor)."""
    conditions, args = _where(organisation_id, filters)
    args.extend([pivot["created_at"], pivot["id"]])
    conditions.append(f"(c.created_at, c.id) >= (${len(args) - 1}, ${len(args)})")
    where = " AND ".join(conditions)
    offset = await pool.fetchval(f"SELECT count(*) FROM calls c WHERE {where}", *args)
    last = await pool.fetchrow(
        f"SELECT c.created_at, c.id FROM calls c WHERE {where} ORDER BY c.created_at, c.id LIMIT 1", *args
    )
    if last is None:
        return 0, (pivot["created_at"], pivot["id"])
    return int(offset), (last["created_at"], last["id"])


async def offset_ids(pool: Any, organisation_id: uuid.UUID, filters: CallFilter, offset: int) -> list[uuid.UUID]:
    conditions, args = _where(organisation_id, filters)
    rows = await pool.fetch(
        f"SELECT c.id FROM calls c WHERE {' AND '.join(conditions)} "
        f"ORDER BY c.created_at DESC, c.id DESC LIMIT {LIMIT} OFFSET {offset}",
        *args,
    )
    return [r["id"] for r in rows]


class _Capture:
    """Stands in for the pool to catch the statement ``CallSearch`` would run (to EXPLAIN it and to
    find it in ``pg_prepared_statements``) without running it."""

    query = ""
    args: tuple[Any, ...] = ()

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        self.query, self.args = query, args
        return []


async def statement(run: Query) -> tuple[str, tuple[Any, ...]]:
    capture = _Capture()
    await run(CallSearch(capture))
    return capture.query, capture.args


async def plans_made(pool: Any, query: str) -> tuple[int, int]:
    """How many generic and custom plans the connection's cached statement has run with so far.

    asyncpg keeps each statement prepared (``statement_cache_size``), and after five executions
    Postgres may switch a prepared statement to a generic plan, one planned without the arguments."""
    row = await pool.fetchrow(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1", query
    )
    return (0, 0) if row is None else (row["generic_plans"], row["custom_plans"])


async def timed(pool: Any, query: str, run: Callable[[], Awaitable[object]], warmup: int, runs: int) -> Timing:
    for _ in range(warmup):
        await run()
    generic, custom = await plans_made(pool, query)
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await run()
        samples.append(time.perf_counter() - started)
    generic_after, custom_after = await plans_made(pool, query)
    plan = {(True, False): "generic", (False, True): "custom"}.get(
        (generic_after > generic, custom_after > custom), "mixed"
    )
    return Timing(statistics.median(samples) * 1000, plan)


def _literal(value: Any) -> str:
    """One of the bench's own arguments as SQL text, for EXECUTE (which takes no parameters)."""
    if isinstance(value, int):
        return str(value)
    text = value.isoformat() if isinstance(value, datetime.datetime) else str(value)
    return "'" + text.replace("'", "''") + "'"


async def explain(pool: Any, query: str, args: tuple[Any, ...], mode: str) -> list[str]:
    """EXPLAIN (ANALYZE, BUFFERS) of ``query`` run as a prepared statement with a ``mode`` plan
    (``force_custom_plan`` or ``force_generic_plan``), as the server's cached statements run."""
    async with pool.acquire() as conn:
        await conn.execute(f"SET plan_cache_mode = {mode}")
        await conn.execute(f"PREPARE bench_explain AS {query}")
        try:
            arguments = ", ".join(_literal(a) for a in args)
            rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_explain({arguments})")
        finally:
            await conn.execute("DEALLOCATE bench_explain")
            await conn.execute("RESET plan_cache_mode")
    return [r[0] for r in rows]


Query = Callable[[CallSearch], Awaitable[object]]


def queries(
    organisation_id: uuid.UUID, case: Case, after: tuple[datetime.datetime, uuid.UUID] | None, offset: int
) -> tuple[Query, Query]:
    """The case's page by keyset and by OFFSET, for any ``CallSearch``."""

    def keyset(search: CallSearch) -> Awaitable[object]:
        return search.page(organisation_id, case.filters, limit=LIMIT, after=after)

    def by_offset(search: CallSearch) -> Awaitable[object]:
        return search.offset_page(organisation_id, case.filters, limit=LIMIT, offset=offset)

    return keyset, by_offset


async def measure(database: Database, org: Tenant, depth: int, warmup: int, runs: int, show: bool) -> list[Result]:
    pool, search, organisation_id = database.pool, database.call_search, org.organisation_id
    pivot = await pool.fetchrow(
        "SELECT created_at, id FROM calls WHERE organisation_id = $1 "
        "ORDER BY created_at DESC, id DESC OFFSET $2 LIMIT 1",
        organisation_id,
        depth,
    )
    results = []
    for case in await cases(database, org):
        offset, after = await position(pool, organisation_id, case.filters, pivot) if case.deep else (0, None)

        keyset, by_offset = queries(organisation_id, case, after, offset)
        page = await search.page(organisation_id, case.filters, limit=LIMIT, after=after)
        if [listed.call.id for listed in page] != await offset_ids(pool, organisation_id, case.filters, offset):
            raise SystemExit(f"{case.name}: the keyset page and the OFFSET page differ")
        keyset_sql, keyset_args = await statement(keyset)
        offset_sql, offset_args = await statement(by_offset)
        result = Result(
            case,
            len(page),
            offset,
            await timed(pool, keyset_sql, partial(keyset, search), warmup, runs),
            await timed(pool, offset_sql, partial(by_offset, search), warmup, runs),
        )
        print(_line(result), flush=True)
        results.append(result)
        if show:
            title = f"{case.name}{', deep' if case.deep else ', first page'}"
            for label, sql, sql_args, mode in (
                ("keyset, custom plan", keyset_sql, keyset_args, "force_custom_plan"),
                ("keyset, generic plan", keyset_sql, keyset_args, "force_generic_plan"),
                ("offset, custom plan", offset_sql, offset_args, "force_custom_plan"),
            ):
                print(f"--- {title}: {label}")
                print("\n".join(await explain(pool, sql, sql_args, mode)))
    return results


_HEADER = (
    f"{'query':40s} {'page':>4s} {'rows before':>11s} {'keyset ms':>9s} {'plan':>7s} {'offset ms':>9s} "
    f"{'plan':>7s} {'k/o':>6s}  target"
)


def _line(r: Result) -> str:
    name = r.case.name + (", deep" if r.case.deep else ", first page")
    verdict = "PASS" if r.keyset.ms <= TARGET_MS else "FAIL"
    ratio = r.keyset.ms / r.offset.ms
    return (
        f"{name:40s} {r.rows:4d} {r.offset_rows:11,d} {r.keyset.ms:9.2f} {r.keyset.plan:>7s} {r.offset.ms:9.2f} "
        f"{r.offset.plan:>7s} {ratio:6.3f}  {verdict}"
    )


async def run(args: argparse.Namespace, server_dsn: str) -> None:
    name = args.database or f"callbutton_bench_{uuid.uuid4().hex[:8]}"
    if not args.database:
        await admin(server_dsn, f'CREATE DATABASE "{name}"')
    dsn = database_dsn(server_dsn, name)
    try:
        # One connection: every query shares one plan cache, as on one of the server's connections.
        database = await Database.connect(dsn, min_size=1, max_size=1)
        try:
            if args.database:
                org = await existing(database)
            else:
                await database.migrate()
                org = await seed(database, args.calls)
            depth = min(args.depth, await describe(database, org.organisation_id) // 2)
            print(f"limit {LIMIT}; deep pages start {depth:,} calls in; median of {args.runs} runs after {args.warmup}")
            print(_HEADER)
            results = await measure(database, org, depth, args.warmup, args.runs, args.explain)
        finally:
            await database.close()
    finally:
        if args.keep or args.database:
            print(f"database kept: {dsn}")
        else:
            await admin(
                server_dsn,
                f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                f'DROP DATABASE IF EXISTS "{name}_keys" WITH (FORCE)',  # the key store made beside it
            )
    failed = [r for r in results if r.keyset.ms > TARGET_MS]
    print(f"\nkeyset pages within {TARGET_MS:g} ms: {len(results) - len(failed)} of {len(results)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="calls of the organisation measured")
    parser.add_argument("--depth", type=int, default=500_000, help="calls before a deep page (at most half)")
    parser.add_argument("--dsn", default=os.environ.get("CALLBUTTON_DATABASE_URL"), help="a server to use")
    parser.add_argument("--database", help="measure this database, seeded by an earlier --keep run (needs --dsn)")
    parser.add_argument("--keep", action="store_true", help="keep the database (and a throwaway cluster)")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN (ANALYZE, BUFFERS) of each query")
    parser.add_argument(
        "--warmup", type=int, default=6, help="runs before timing (Postgres makes five custom plans first)"
    )
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    if args.database and not args.dsn:
        parser.error("--database needs --dsn (or CALLBUTTON_DATABASE_URL)")
    with server_for(args.dsn, keep=args.keep) as server_dsn:
        asyncio.run(run(args, server_dsn))


if __name__ == "__main__":
    main()
