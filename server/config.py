"""Server settings, read once from ``CALLBUTTON_*`` environment variables.

Every variable is declared in ``VARIABLES`` with its default and meaning; the README's configuration
table is generated from the same list (``callbutton config --markdown``), so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiortc.rtcicetransport import parse_stun_turn_uri

from server.origins import OriginError, loopback_aliases, normalise_origin


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    help: str


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "CALLBUTTON_ENV",
        "development",
        "`development` or `production`. Production refuses to start without a master key.",
    ),
    Variable(
        "CALLBUTTON_DATABASE_URL",
        "",
        "Postgres DSN (`postgresql://user@host/db`). Empty: a local cluster is created under "
        "`CALLBUTTON_DATA_DIR/postgres` and started with the server.",
    ),
    Variable(
        "CALLBUTTON_KEYSTORE_URL",
        "",
        "Postgres DSN of the key store, the database holding every recording key, apart from the main "
        "one so that a restored main-database backup cannot decrypt erased recordings. Empty: database "
        "`<main database>_keys` on the same server, created when missing. In production give it a "
        "cluster and a backup schedule of its own (docs/privacy.md).",
    ),
    Variable(
        "CALLBUTTON_PURGE_INTERVAL",
        "3600",
        "Seconds between runs of the retention purge inside the server; 0 turns the schedule off "
        "(then run `callbutton purge` from cron).",
    ),
    Variable(
        "CALLBUTTON_DRAIN_TIMEOUT",
        "30",
        "Seconds a stopping server (SIGTERM, Ctrl-C) waits for calls in progress to end by themselves, "
        "taking no new ones, before it ends the rest.",
    ),
    Variable(
        "CALLBUTTON_METRICS_TOKEN",
        "",
        "Bearer token a Prometheus scraper presents at `/metrics`. Empty: `/metrics` answers loopback clients only.",
    ),
    Variable(
        "CALLBUTTON_DATA_DIR",
        "./data",
        "Folder for server state: the local Postgres cluster, recordings, a development master key.",
    ),
    Variable(
        "CALLBUTTON_RECORDINGS_DIR",
        "",
        "Folder for encrypted recording files. Empty: `CALLBUTTON_DATA_DIR/recordings`.",
    ),
    Variable(
        "CALLBUTTON_MASTER_KEY_FILE",
        "",
        "File holding the master key (base64 of 32 random bytes; `callbutton keys generate` makes "
        "one). It wraps every organisation key; it never enters the database or the logs.",
    ),
    Variable(
        "CALLBUTTON_MASTER_KEY",
        "",
        "The master key itself (base64), when a file is not practical. Empty, with no key file: in "
        "development a key is generated into `CALLBUTTON_DATA_DIR/master.key` with a warning; in "
        "production the server refuses to start.",
    ),
    Variable("CALLBUTTON_HOST", "127.0.0.1", "Address the HTTP server listens on."),
    Variable("CALLBUTTON_PORT", "8080", "Port the HTTP server listens on."),
    Variable(
        "CALLBUTTON_PUBLIC_URL",
        "",
        "Origin users reach the server at (`https://calls.example.com`). Agent and admin sockets "
        "must come from this origin. Empty: `http://HOST:PORT`.",
    ),
    Variable(
        "CALLBUTTON_ICE_HOST_ADDRESSES",
        "",
        "Comma-separated local addresses ICE gathers host candidates on. Empty: every non-loopback "
        "interface address. Tests and single-machine demos set `127.0.0.1`.",
    ),
    Variable(
        "CALLBUTTON_ICE_SERVERS",
        "",
        "Comma-separated STUN/TURN URLs for the server's own ICE agent and for browsers "
        "(`stun:stun.example.com:3478`). Empty: none (no public STUN server is used by default).",
    ),
    Variable(
        "CALLBUTTON_RING_TIMEOUT",
        "30",
        "Seconds a call rings at one agent before the next is tried, unless the button sets its own. "
        "How long a call may wait in all is the button's maximum queue wait.",
    ),
    Variable(
        "CALLBUTTON_SESSION_IDLE_TIMEOUT",
        "1800",
        "Seconds of inactivity after which an agent or admin session expires.",
    ),
    Variable(
        "CALLBUTTON_SESSION_MAX_AGE",
        "43200",
        "Seconds after login after which a session expires whatever its activity.",
    ),
    Variable(
        "CALLBUTTON_CALL_RATE_PER_ADDRESS",
        "6",
        "Calls a minute one visitor address may start (bursts of half that); more are refused.",
    ),
    Variable(
        "CALLBUTTON_CALL_RATE_PER_BUTTON",
        "120",
        "Calls a minute one button may take (bursts of half that); more are refused.",
    ),
    Variable(
        "CALLBUTTON_VISITOR_SOCKETS_PER_ADDRESS",
        "10",
        "Visitor sockets one address may have open at once; more are refused with 429.",
    ),
    Variable(
        "CALLBUTTON_LOGIN_RATE_PER_ADDRESS",
        "30",
        "Login attempts a minute from one address; more get 429. Accounts are never locked.",
    ),
    Variable(
        "CALLBUTTON_LOGIN_RATE_PER_ACCOUNT",
        "5",
        "Login attempts a minute for one email from one address; more get 429.",
    ),
    Variable(
        "CALLBUTTON_TRUSTED_PROXIES",
        "",
        "Comma-separated addresses of reverse proxies in front of the server. A request from one of "
        "them is counted (rate limits, audit log) under the client address it gives in "
        "`X-Forwarded-For`. Empty: the connecting address is the client's.",
    ),
    Variable(
        "CALLBUTTON_WEBHOOK_RETRY_SECONDS",
        "10",
        "Seconds before a failed webhook delivery is tried again; each further retry waits twice as "
        "long (at most an hour), 20 attempts in all.",
    ),
    Variable("CALLBUTTON_LOG_FORMAT", "console", "`console` (human-readable) or `json`."),
    Variable("CALLBUTTON_LOG_LEVEL", "info", "`debug`, `info`, `warning` or `error`."),
)

_DEFAULTS = {v.name: v.default for v in VARIABLES}


@dataclass(frozen=True)
class Settings:
    """Validated settings. Build with :meth:`from_env`; tests use :func:`dataclasses.replace`."""

    env: str = "development"
    database_url: str = ""
    keystore_url: str = ""
    purge_interval: float = 3600.0
    metrics_token: str = field(default="", repr=False)
    drain_timeout: float = 30.0
    data_dir: Path = Path("./data")
    recordings_dir: Path | None = None
    master_key_file: Path | None = None
    master_key: str = field(default="", repr=False)
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    ice_host_addresses: tuple[str, ...] = ()
    ice_servers: tuple[str, ...] = ()
    ring_timeout: float = 30.0
    session_idle_timeout: float = 1800.0
    session_max_age: float = 43200.0
    call_rate_per_address: float = 6.0
    call_rate_per_button: float = 120.0
    visitor_sockets_per_address: int = 10
    login_rate_per_address: float = 30.0
    login_rate_per_account: float = 5.0
    trusted_proxies: tuple[str, ...] = ()
    webhook_retry_seconds: float = 10.0
    log_format: str = "console"
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        source = os.environ if env is None else env

        def get(name: str) -> str:
            return source.get(name, _DEFAULTS[name]).strip()

        # CALLBUTTON_TEST_* belong to the test suite, not to the server.
        unknown = sorted(
            k
            for k in source
            if k.startswith("CALLBUTTON_") and not k.startswith("CALLBUTTON_TEST_") and k not in _DEFAULTS
        )
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]} (see the README's configuration table)")

        settings = cls(
            env=_choice(get("CALLBUTTON_ENV"), "CALLBUTTON_ENV", ("development", "production")),
            database_url=get("CALLBUTTON_DATABASE_URL"),
            keystore_url=get("CALLBUTTON_KEYSTORE_URL"),
            metrics_token=get("CALLBUTTON_METRICS_TOKEN"),
            drain_timeout=_float(get("CALLBUTTON_DRAIN_TIMEOUT"), "CALLBUTTON_DRAIN_TIMEOUT", zero=True),
            purge_interval=_float(get("CALLBUTTON_PURGE_INTERVAL"), "CALLBUTTON_PURGE_INTERVAL", "seconds", zero=True),
            data_dir=Path(get("CALLBUTTON_DATA_DIR")),
            recordings_dir=_path(get("CALLBUTTON_RECORDINGS_DIR")),
            master_key_file=_path(get("CALLBUTTON_MASTER_KEY_FILE")),
            master_key=get("CALLBUTTON_MASTER_KEY"),
            host=get("CALLBUTTON_HOST"),
            port=_int(get("CALLBUTTON_PORT"), "CALLBUTTON_PORT", 0, 65535),
            public_url=get("CALLBUTTON_PUBLIC_URL").rstrip("/"),
            ice_host_addresses=_addresses(get("CALLBUTTON_ICE_HOST_ADDRESSES")),
            ice_servers=_list(get("CALLBUTTON_ICE_SERVERS")),
            ring_timeout=_float(get("CALLBUTTON_RING_TIMEOUT"), "CALLBUTTON_RING_TIMEOUT"),
            session_idle_timeout=_float(get("CALLBUTTON_SESSION_IDLE_TIMEOUT"), "CALLBUTTON_SESSION_IDLE_TIMEOUT"),
            session_max_age=_float(get("CALLBUTTON_SESSION_MAX_AGE"), "CALLBUTTON_SESSION_MAX_AGE"),
            call_rate_per_address=_float(
                get("CALLBUTTON_CALL_RATE_PER_ADDRESS"), "CALLBUTTON_CALL_RATE_PER_ADDRESS", "calls a minute"
            ),
            call_rate_per_button=_float(
                get("CALLBUTTON_CALL_RATE_PER_BUTTON"), "CALLBUTTON_CALL_RATE_PER_BUTTON", "calls a minute"
            ),
            visitor_sockets_per_address=_int(
                get("CALLBUTTON_VISITOR_SOCKETS_PER_ADDRESS"), "CALLBUTTON_VISITOR_SOCKETS_PER_ADDRESS", 1, 10**6
            ),
            login_rate_per_address=_float(
                get("CALLBUTTON_LOGIN_RATE_PER_ADDRESS"), "CALLBUTTON_LOGIN_RATE_PER_ADDRESS", "attempts a minute"
            ),
            login_rate_per_account=_float(
                get("CALLBUTTON_LOGIN_RATE_PER_ACCOUNT"), "CALLBUTTON_LOGIN_RATE_PER_ACCOUNT", "attempts a minute"
            ),
            trusted_proxies=_addresses(get("CALLBUTTON_TRUSTED_PROXIES"), "CALLBUTTON_TRUSTED_PROXIES"),
            webhook_retry_seconds=_float(get("CALLBUTTON_WEBHOOK_RETRY_SECONDS"), "CALLBUTTON_WEBHOOK_RETRY_SECONDS"),
            log_format=_choice(get("CALLBUTTON_LOG_FORMAT"), "CALLBUTTON_LOG_FORMAT", ("console", "json")),
            log_level=_choice(
                get("CALLBUTTON_LOG_LEVEL"), "CALLBUTTON_LOG_LEVEL", ("debug", "info", "warning", "error")
            ),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.master_key and self.master_key_file:
            raise ConfigError("set CALLBUTTON_MASTER_KEY or CALLBUTTON_MASTER_KEY_FILE, not both")
        if self.public_url:
            try:
                normalised = normalise_origin(self.public_url)
            except OriginError:
                raise ConfigError(
                    "CALLBUTTON_PUBLIC_URL must be an origin such as https://calls.example.com, "
                    f"got {self.public_url!r}"
                ) from None
            if normalised != self.public_url:
                raise ConfigError(f"CALLBUTTON_PUBLIC_URL: write it as browsers do, {normalised!r}")
        for url in self.ice_servers:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ConfigError(f"CALLBUTTON_ICE_SERVERS: {url!r} is not a stun:, turn: or turns: URL")
            try:
                parse_stun_turn_uri(url)  # what aiortc will do with it on every call
            except ValueError as exc:
                raise ConfigError(f"CALLBUTTON_ICE_SERVERS: {url!r} is malformed ({exc})") from None

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def recordings_root(self) -> Path:
        return self.recordings_dir or self.data_dir / "recordings"

    @property
    def origin(self) -> str:
        """The app's own origin: where agent and admin pages are served from."""
        if self.public_url:
            return self.public_url
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def origins(self) -> frozenset[str]:
        """Every origin the app accepts its own pages' requests from: its origin, and on a loopback
        address without a public URL, the same port under each loopback name."""
        return frozenset({self.origin}) if self.public_url else loopback_aliases(self.origin)

    def with_port(self, port: int) -> Settings:
        """The same settings once the listening port is known (port 0 binds a free one)."""
        return dataclasses.replace(self, port=port)


def _int(value: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if not low <= number <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {number}")
    return number


def _float(value: str, name: str, unit: str = "seconds", *, zero: bool = False) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number of {unit}, got {value!r}") from None
    if zero and number == 0:
        return 0.0
    if not 0 < number < 10**7:
        raise ConfigError(f"{name} must be a positive number of {unit}, got {value!r}")
    return number


def _choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _path(value: str) -> Path | None:
    return Path(value) if value else None


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _addresses(value: str, name: str = "CALLBUTTON_ICE_HOST_ADDRESSES") -> tuple[str, ...]:
    items = _list(value)
    for item in items:
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an IP address") from None
    return items


def markdown_table() -> str:
    """The README's configuration table."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for v in VARIABLES:
        default = f"`{v.default}`" if v.default else "(empty)"
        rows.append(f"| `{v.name}` | {default} | {v.help} |")
    return "\n".join(rows)
