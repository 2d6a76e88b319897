"""Where the master key comes from: configuration, or in development a generated file.

The key never enters the database or a log line. ``MasterKey``'s repr shows only its fingerprint.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from server.config import ConfigError, Settings
from storage.keys import KeyringError, MasterKey

log = structlog.get_logger(__name__)

MASTER_KEY_GENERATED = "keys.master_key_generated"
MASTER_KEY_LOADED = "keys.master_key_loaded"
DEVELOPMENT_KEY_FILE = "master.key"


def read_key_file(path: Path) -> MasterKey:
    try:
        text = path.read_text(encoding="ascii")
    except OSError as exc:
        raise ConfigError(f"cannot read the master key file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the master key file {path} is not base64 text") from None
    try:
        return MasterKey.from_text(text)
    except KeyringError as exc:
        raise ConfigError(f"the master key file {path}: {exc}") from None


def write_key_file(path: Path, key: MasterKey) -> None:
    """Create ``path`` (owner-only) holding ``key``; never overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as out:
        out.write(key.to_text() + "\n")


def load_master_key(settings: Settings) -> MasterKey:
    """The configured master key; in development, one generated on first use (loudly)."""
    if settings.master_key:
        try:
            key = MasterKey.from_text(settings.master_key)
        except KeyringError as exc:
            raise ConfigError(f"CALLBUTTON_MASTER_KEY: {exc}") from None
    elif settings.master_key_file is not None:
        key = read_key_file(settings.master_key_file)
    elif settings.production:
        raise ConfigError(
            "production mode needs a master key: set CALLBUTTON_MASTER_KEY_FILE (make one with "
            "`callbutton keys generate`); without it no recording could be read after a restart"
        )
    else:
        path = settings.data_dir / DEVELOPMENT_KEY_FILE
        if path.exists():
            key = read_key_file(path)
        else:
            key = MasterKey.generate()
            write_key_file(path, key)
            log.warning(
                MASTER_KEY_GENERATED,
                message="DEVELOPMENT ONLY: generated a master key next to the data. Anyone with this "
                "folder can read every recording. In production set CALLBUTTON_MASTER_KEY_FILE and "
                "CALLBUTTON_ENV=production.",
                path=str(path.resolve()),
                master_key_id=key.id,
            )
            return key
    log.info(MASTER_KEY_LOADED, master_key_id=key.id)
    return key
