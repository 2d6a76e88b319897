"""A local Postgres cluster for development, demos and tests, from the machine's Postgres binaries.

Used when no ``CALLBUTTON_DATABASE_URL`` is configured: the cluster lives in a folder of ours, listens
only on a Unix socket inside that folder (no TCP port to collide with or to expose), and is stopped
when we stop. Postgres refuses to run as root; when we are root the cluster is owned by and run as the
``postgres`` system user that Debian's packages create.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import structlog

log = structlog.get_logger(__name__)

LOCAL_POSTGRES = "postgres.local_cluster"
_PORT = 5432  # only names the socket file; nothing listens on TCP


class LocalPostgresError(Exception):
    """The local cluster could not be created or started; the message says what to do."""


def find_bin_dir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: Debian's newest, else whatever is on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    raise LocalPostgresError(
        "no CALLBUTTON_DATABASE_URL is set and no Postgres server binaries were found to start a "
        "local cluster: install them (Debian: apt-get install postgresql) or set CALLBUTTON_DATABASE_URL"
    )


@dataclass
class LocalPostgres:
    """One cluster in ``directory``; ``start()`` creates it on first use."""

    directory: Path
    database: str = "callbutton"
    _bin: Path | None = field(default=None, init=False)
    _user: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # Commands run with cwd=/ (the postgres user may not reach ours): paths must be absolute.
        self.directory = self.directory.resolve()

    @property
    def dsn(self) -> str:
        host = quote(str(self.directory), safe="")
        return f"postgresql://postgres@/{self.database}?host={host}&port={_PORT}"

    def start(self) -> str:
        """Create the cluster if needed, start it, create the database; return its DSN."""
        self._bin = find_bin_dir()
        self._user = _run_as_user()
        created = not (self.directory / "PG_VERSION").exists()
        if created:
            self._init()
        if self._pg_ctl("status", check=False).returncode != 0:
            logfile = self.directory / "server.log"
            self._pg_ctl(
                "start",
                "-w",
                "-t",
                "60",
                "-l",
                str(logfile),
                "-o",
                f"-k {self.directory} -c listen_addresses='' -p {_PORT} -c fsync=on",
            )
        query = self._command(
            [
                str(self._bin / "psql"),
                "-v",
                "ON_ERROR_STOP=1",
                "-q",
                "-h",
                str(self.directory),
                "-p",
                str(_PORT),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'",
            ],
        )
        if query.stdout.strip() != "1":
            self._command(
                [
                    str(self._bin / "createdb"),
                    "-h",
                    str(self.directory),
                    "-p",
                    str(_PORT),
                    "-U",
                    "postgres",
                    self.database,
                ]
            )
        log.info(LOCAL_POSTGRES, directory=str(self.directory), created=created, database=self.database)
        return self.dsn

    def stop(self) -> None:
        if self._bin is not None and (self.directory / "postmaster.pid").exists():
            self._pg_ctl("stop", "-m", "fast", "-w", check=False)

    def _init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            record = pwd.getpwnam(self._user)
            os.chown(self.directory, record.pw_uid, record.pw_gid)
            _ensure_traversable(self.directory)
        self.directory.chmod(0o700)
        assert self._bin is not None
        self._command(
            [
                str(self._bin / "initdb"),
                "-D",
                str(self.directory),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ]
        )

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self._bin is not None
        return self._command([str(self._bin / "pg_ctl"), "-D", str(self.directory), *args], check=check)

    def _command(self, argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        program = Path(argv[0]).name
        if self._user is not None:
            argv = ["runuser", "-u", self._user, "--", *argv]
        result = subprocess.run(  # noqa: S603 - fixed binaries, arguments are ours
            argv, capture_output=True, text=True, check=False, cwd="/"
        )
        if check and result.returncode != 0:
            raise LocalPostgresError(
                f"{program} failed for the local cluster in {self.directory}: "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result


def _run_as_user() -> str | None:
    """None when we can run Postgres ourselves; the system user to run it as when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise LocalPostgresError(
            "Postgres refuses to run as root and there is no 'postgres' user to run the local cluster "
            "as: run as an ordinary user or set CALLBUTTON_DATABASE_URL"
        ) from None
    return "postgres"


def _ensure_traversable(directory: Path) -> None:
    """Let the postgres user reach a folder of root's: every parent must be searchable."""
    for parent in directory.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            raise LocalPostgresError(
                f"the postgres user cannot reach {directory}: {parent} is not searchable by others; "
                "choose another CALLBUTTON_DATA_DIR"
            )


@contextlib.contextmanager
def server_for(dsn: str | None, *, keep: bool = False) -> Iterator[str]:
    """A DSN to a Postgres server one may create databases in: ``dsn`` itself, else a throwaway
    cluster in a temporary folder, removed afterwards unless ``keep`` (for benchmarks)."""
    if dsn:
        yield dsn
        return
    folder = Path(tempfile.mkdtemp(prefix="callbutton-bench-pg-"))
    folder.chmod(0o755)  # the cluster may run as the postgres user
    cluster = LocalPostgres(folder / "cluster", database="postgres")
    try:
        yield cluster.start()
    finally:
        if keep:
            print(f"cluster kept: stop it with pg_ctl -D {cluster.directory} stop (as the postgres user if root)")
        else:
            cluster.stop()
            shutil.rmtree(folder, ignore_errors=True)
