"""Server settings, read once from ``CALLBUTTON_*`` environment variables.

Every variable is declared in ``VARIABLES`` with its default and meaning; the README's configuration
table is generated from the same list (``callbutton config --markdown``), so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
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
    #: How the README's table shows the default, when it depends on other settings.
    shown: str = ""


VARIABLES: tuple[Variable, ...] = (
    Variable(
        "CALLBUTTON_ENV",
        "development",
        "`development` or `production`. Production refuses to start without a master key, a session "
        "secret and an https `CALLBUTTON_PUBLIC_URL`, and without either a TLS certificate "
        "(`CALLBUTTON_TLS_CERT_FILE`) or `CALLBUTTON_TRUSTED_PROXIES` (behind an https reverse proxy).",
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
    Variable(
        "CALLBUTTON_SESSION_SECRET_FILE",
        "",
        "File holding the session secret (at least 32 characters; `openssl rand -base64 32` makes one), "
        "the key under which the database keeps session tokens (HMAC-SHA256). Changing it ends every "
        "session at once. Required in production.",
    ),
    Variable(
        "CALLBUTTON_SESSION_SECRET",
        "",
        "The session secret itself, when a file is not practical. Empty, with no file: in development "
        "it is derived from the master key; in production the server refuses to start.",
    ),
    Variable("CALLBUTTON_HOST", "127.0.0.1", "Address the HTTP server listens on."),
    Variable("CALLBUTTON_PORT", "8080", "Port the HTTP server listens on."),
    Variable(
        "CALLBUTTON_PUBLIC_URL",
        "",
        "Origin users reach the server at (`https://calls.example.com`). Agent and admin sockets "
        "must come from this origin. Empty: `http://HOST:PORT` (`https://` with a certificate). "
        "Required, and https, in production.",
    ),
    Variable(
        "CALLBUTTON_TLS_CERT_FILE",
        "",
        "PEM certificate chain: with it (and `CALLBUTTON_TLS_KEY_FILE`) the server serves https itself, "
        "TLS 1.2 or newer. Read at start: restart after renewing it. Empty: plain http (behind a "
        "reverse proxy in production).",
    ),
    Variable("CALLBUTTON_TLS_KEY_FILE", "", "PEM private key of `CALLBUTTON_TLS_CERT_FILE`."),
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
        "CALLBUTTON_TURN_URLS",
        "",
        "Comma-separated `turn:`/`turns:` URLs of a TURN server sharing `CALLBUTTON_TURN_SECRET_FILE` "
        "(coturn's `use-auth-secret`). Every agent and visitor socket gets time-limited credentials for "
        "them in its `hello` (docs/operations.md, TURN). Empty: no TURN credentials are handed out.",
    ),
    Variable(
        "CALLBUTTON_TURN_SECRET_FILE",
        "",
        "File holding the secret shared with the TURN server (coturn's `static-auth-secret`; at least "
        "16 characters, no spaces; `openssl rand -hex 32` makes one). Required with `CALLBUTTON_TURN_URLS`.",
    ),
    Variable("CALLBUTTON_TURN_SECRET", "", "The TURN secret itself, when a file is not practical."),
    Variable(
        "CALLBUTTON_TURN_TTL",
        "86400",
        "Seconds TURN credentials stay valid from the `hello` that carried them: how long they can open "
        "relays (a relay opened in time lasts as long as its call).",
    ),
    Variable(
        "CALLBUTTON_REDIS_URL",
        "",
        "Redis shared by the server processes of one deployment (`redis://host:6379/0`): with it this "
        "process is a node of a cluster, and `serve --workers N` runs several (docs/scaling.md). Empty: "
        "one process, no Redis.",
    ),
    Variable(
        "CALLBUTTON_NODE_NAME",
        "",
        "This node's name in the cluster, different on every node and kept across its restarts (a node "
        "starting closes the calls it carried before). Empty: the machine's host name. Workers add `-w1`, "
        "`-w2`, ...",
    ),
    Variable(
        "CALLBUTTON_INTERNAL_HOST",
        "127.0.0.1",
        "Address this node listens on, and tells the other nodes, for the sockets they relay to it (the "
        "home of an organisation; docs/scaling.md). 127.0.0.1 suits workers on one machine; nodes on "
        "several machines set an address of a private network they share.",
    ),
    Variable(
        "CALLBUTTON_INTERNAL_PORT",
        "0",
        "Port of that internal listener; 0: a free one, chosen at start (every worker has its own).",
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
        "CALLBUTTON_MAX_CALLS",
        "0",
        "Calls one server process carries at once (ringing, queued or answered); a visitor's call past "
        'it is refused ("every line is busy just now") rather than every call\'s audio degrading. '
        "Set it to what `bench/capacity.py` finds a process carries on your machine (64-80 recorded "
        "calls on the project's 2-core one; each worker has its own). 0: no limit.",
    ),
    Variable(
        "CALLBUTTON_MAX_LOOP_BUSY",
        "0.8",
        "The share of its time a server process's event loop may be busy (not waiting for the next "
        "packet or message), averaged over 5 s, before a visitor's call is refused (\"every line is "
        "busy just now\"): near 1.0 every call's audio waits. Calls in progress, queued or ringing are "
        "never touched. 0: never refuse for load.",
    ),
    Variable(
        "CALLBUTTON_EVENT_LOOP",
        "asyncio",
        "`asyncio` or `uvloop`: the event loop a server process runs on. uvloop (libuv) forwarded a "
        "call's packets for about a tenth less CPU, though the whole server measured no difference "
        "(docs/benchmarks.md); its load is measured from the kernel's accounting of the loop's thread "
        "rather than asyncio's selector (docs/scaling.md).",
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
    Variable(
        "CALLBUTTON_LOG_FORMAT",
        "",
        "`console` (human-readable) or `json` (one object a line).",
        shown="`console` (`json` in production)",
    ),
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
    session_secret_file: Path | None = None
    session_secret: str = field(default="", repr=False)
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    ice_host_addresses: tuple[str, ...] = ()
    ice_servers: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret_file: Path | None = None
    turn_secret: str = field(default="", repr=False)
    turn_ttl: int = 86400
    redis_url: str = field(default="", repr=False)
    node_name: str = ""
    internal_host: str = "127.0.0.1"
    internal_port: int = 0
    ring_timeout: float = 30.0
    session_idle_timeout: float = 1800.0
    session_max_age: float = 43200.0
    call_rate_per_address: float = 6.0
    call_rate_per_button: float = 120.0
    max_calls: int = 0
    max_loop_busy: float = 0.8
    event_loop: str = "asyncio"
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
            session_secret_file=_path(get("CALLBUTTON_SESSION_SECRET_FILE")),
            session_secret=get("CALLBUTTON_SESSION_SECRET"),
            host=get("CALLBUTTON_HOST"),
            port=_int(get("CALLBUTTON_PORT"), "CALLBUTTON_PORT", 0, 65535),
            public_url=get("CALLBUTTON_PUBLIC_URL").rstrip("/"),
            tls_cert_file=_path(get("CALLBUTTON_TLS_CERT_FILE")),
            tls_key_file=_path(get("CALLBUTTON_TLS_KEY_FILE")),
            ice_host_addresses=_addresses(get("CALLBUTTON_ICE_HOST_ADDRESSES")),
            ice_servers=_list(get("CALLBUTTON_ICE_SERVERS")),
            turn_urls=_list(get("CALLBUTTON_TURN_URLS")),
            turn_secret_file=_path(get("CALLBUTTON_TURN_SECRET_FILE")),
            turn_secret=get("CALLBUTTON_TURN_SECRET"),
            turn_ttl=_int(get("CALLBUTTON_TURN_TTL"), "CALLBUTTON_TURN_TTL", MIN_TURN_TTL, MAX_TURN_TTL),
            redis_url=get("CALLBUTTON_REDIS_URL"),
            node_name=get("CALLBUTTON_NODE_NAME"),
            internal_host=_addresses(get("CALLBUTTON_INTERNAL_HOST"), "CALLBUTTON_INTERNAL_HOST")[0]
            if get("CALLBUTTON_INTERNAL_HOST")
            else "127.0.0.1",
            internal_port=_int(get("CALLBUTTON_INTERNAL_PORT"), "CALLBUTTON_INTERNAL_PORT", 0, 65535),
            ring_timeout=_float(get("CALLBUTTON_RING_TIMEOUT"), "CALLBUTTON_RING_TIMEOUT"),
            session_idle_timeout=_float(get("CALLBUTTON_SESSION_IDLE_TIMEOUT"), "CALLBUTTON_SESSION_IDLE_TIMEOUT"),
            session_max_age=_float(get("CALLBUTTON_SESSION_MAX_AGE"), "CALLBUTTON_SESSION_MAX_AGE"),
            call_rate_per_address=_float(
                get("CALLBUTTON_CALL_RATE_PER_ADDRESS"), "CALLBUTTON_CALL_RATE_PER_ADDRESS", "calls a minute"
            ),
            call_rate_per_button=_float(
                get("CALLBUTTON_CALL_RATE_PER_BUTTON"), "CALLBUTTON_CALL_RATE_PER_BUTTON", "calls a minute"
            ),
            max_calls=_int(get("CALLBUTTON_MAX_CALLS"), "CALLBUTTON_MAX_CALLS", 0, 10**6),
            max_loop_busy=_share(get("CALLBUTTON_MAX_LOOP_BUSY"), "CALLBUTTON_MAX_LOOP_BUSY"),
            event_loop=_choice(get("CALLBUTTON_EVENT_LOOP"), "CALLBUTTON_EVENT_LOOP", ("asyncio", "uvloop")),
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
            log_format=_choice(
                get("CALLBUTTON_LOG_FORMAT") or ("json" if get("CALLBUTTON_ENV") == "production" else "console"),
                "CALLBUTTON_LOG_FORMAT",
                ("console", "json"),
            ),
            log_level=_choice(
                get("CALLBUTTON_LOG_LEVEL"), "CALLBUTTON_LOG_LEVEL", ("debug", "info", "warning", "error")
            ),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        """Check the settings together; in production, refuse what production must not run without."""
        if self.master_key and self.master_key_file:
            raise ConfigError("set CALLBUTTON_MASTER_KEY or CALLBUTTON_MASTER_KEY_FILE, not both")
        if self.session_secret and self.session_secret_file:
            raise ConfigError("set CALLBUTTON_SESSION_SECRET or CALLBUTTON_SESSION_SECRET_FILE, not both")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"CALLBUTTON_REDIS_URL must be a redis://, rediss:// or unix:// URL, got {self.redis_url!r}"
            )
        if self.node_name and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", self.node_name):
            raise ConfigError(
                f"CALLBUTTON_NODE_NAME: letters, digits, '.', '_' and '-', at most 63, got {self.node_name!r}"
            )
        if self.session_secret:
            check_session_secret(self.session_secret, "CALLBUTTON_SESSION_SECRET")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError("set both CALLBUTTON_TLS_CERT_FILE and CALLBUTTON_TLS_KEY_FILE, or neither")
        self._validate_turn()
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
        if self.production:
            self._validate_production()

    def _validate_turn(self) -> None:
        if self.turn_secret and self.turn_secret_file:
            raise ConfigError("set CALLBUTTON_TURN_SECRET or CALLBUTTON_TURN_SECRET_FILE, not both")
        if self.turn_secret:
            check_turn_secret(self.turn_secret, "CALLBUTTON_TURN_SECRET")
        has_secret = bool(self.turn_secret or self.turn_secret_file)
        if self.turn_urls and not has_secret:
            raise ConfigError(
                "CALLBUTTON_TURN_URLS needs CALLBUTTON_TURN_SECRET_FILE: the TURN server's static-auth-secret, "
                "under which the server signs the credentials it hands out"
            )
        if has_secret and not self.turn_urls:
            raise ConfigError("a TURN secret is set but CALLBUTTON_TURN_URLS is empty: set the TURN server's URLs")
        for url in self.turn_urls:
            if not url.startswith(("turn:", "turns:")):
                raise ConfigError(f"CALLBUTTON_TURN_URLS: {url!r} is not a turn: or turns: URL")
            try:
                parse_stun_turn_uri(url)
            except ValueError as exc:
                raise ConfigError(f"CALLBUTTON_TURN_URLS: {url!r} is malformed ({exc})") from None

    def _validate_production(self) -> None:
        """What production mode refuses to start without, one message each, naming the setting."""
        if not (self.master_key or self.master_key_file):
            raise ConfigError(
                "production mode needs a master key: set CALLBUTTON_MASTER_KEY_FILE (make one with "
                "`callbutton keys generate`); without it no recording could be read after a restart"
            )
        if not (self.session_secret or self.session_secret_file):
            raise ConfigError(
                "production mode needs a session secret: set CALLBUTTON_SESSION_SECRET_FILE to a file of at "
                "least 32 random characters (`openssl rand -base64 32`)"
            )
        if not self.public_url:
            raise ConfigError(
                "production mode needs CALLBUTTON_PUBLIC_URL, the https origin users reach the server at "
                "(https://calls.example.com): agent sockets and logins are checked against it"
            )
        if not self.public_url.startswith("https://"):
            raise ConfigError(
                f"CALLBUTTON_PUBLIC_URL must be https in production, got {self.public_url!r}: browsers allow "
                "the microphone and __Host- cookies only on secure origins"
            )
        if self.tls_cert_file is None and not self.trusted_proxies:
            raise ConfigError(
                "production mode needs TLS: set CALLBUTTON_TLS_CERT_FILE and CALLBUTTON_TLS_KEY_FILE for the "
                "server to serve https itself, or CALLBUTTON_TRUSTED_PROXIES to the address of the https "
                "reverse proxy in front of it"
            )

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
        scheme = "https" if self.tls_cert_file is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def origins(self) -> frozenset[str]:
        """Every origin the app accepts its own pages' requests from: its origin, and on a loopback
        address without a public URL, the same port under each loopback name."""
        return frozenset({self.origin}) if self.public_url else loopback_aliases(self.origin)

    def with_port(self, port: int) -> Settings:
        """The same settings once the listening port is known (port 0 binds a free one)."""
        return dataclasses.replace(self, port=port)


MIN_SESSION_SECRET = 32
MIN_TURN_SECRET = 16
MIN_TURN_TTL = 60
MAX_TURN_TTL = 7 * 86400


def check_session_secret(secret: str, name: str) -> str:
    if len(secret) < MIN_SESSION_SECRET:
        raise ConfigError(
            f"{name}: a session secret has at least {MIN_SESSION_SECRET} characters "
            f"(`openssl rand -base64 32` makes one), this one has {len(secret)}"
        )
    return secret


def check_turn_secret(secret: str, name: str) -> str:
    # The same secret goes into turnserver.conf (static-auth-secret), whose parser stops at blanks and comments.
    if (
        len(secret) < MIN_TURN_SECRET
        or not secret.isascii()
        or not secret.isprintable()
        or any(c in secret for c in " #\"'")
    ):
        raise ConfigError(
            f"{name}: a TURN secret has at least {MIN_TURN_SECRET} printable ASCII characters and no spaces, "
            "'#' or quotes (`openssl rand -hex 32` makes one)"
        )
    return secret


def read_secret_file(path: Path, name: str) -> str:
    """The text of a secret file (a Docker secret, say), without its final newline."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: {path} is not text") from None
    return text.strip()


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


def _share(value: str, name: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a share between 0 and 1, got {value!r}") from None
    if not 0 <= number <= 1:
        raise ConfigError(f"{name} must be a share between 0 and 1, got {value!r}")
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
        default = v.shown or (f"`{v.default}`" if v.default else "(empty)")
        rows.append(f"| `{v.name}` | {default} | {v.help} |")
    return "\n".join(rows)
