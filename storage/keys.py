"""The key hierarchy: master key -> organisation keys -> one data key per recording.

- The master key is configuration (a file or an environment variable); it never enters the
  database or the logs. Only its fingerprint is stored, beside the keys it wraps, so that a server
  started with the wrong master key says so instead of failing on every recording.
- Each organisation has one current key, stored wrapped by the master key.
- Each recording has a fresh data key (the streaming AEAD's key material), stored wrapped by its
  organisation's key.

Both kinds of wrapped key live in the key store, a database apart from the main one
(``storage/keystore_schema``): a backup of the main database holds no key, so a restore of one taken
before an erasure cannot decrypt what was erased. Destroying a key is deleting its row there.

Wrapping is AES-256-GCM with a random 96-bit nonce, and associated data that names what is wrapped
(which organisation key, which recording), so a wrapped key moved to another row does not unwrap.
Rotation re-wraps keys; it never touches recording files.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from storage.crypto_stream import IKM_SIZE

MASTER_KEY_SIZE = 32
ORGANISATION_KEY_SIZE = 32
_NONCE_SIZE = 12


class KeyringError(Exception):
    """A key is missing, wrong or unreadable; the message says which and what to do."""


@dataclass(frozen=True)
class MasterKey:
    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) != MASTER_KEY_SIZE:
            raise KeyringError(f"a master key is {MASTER_KEY_SIZE} bytes, this one is {len(self.key)}")

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(os.urandom(MASTER_KEY_SIZE))

    @classmethod
    def from_text(cls, text: str) -> MasterKey:
        """A master key written as base64 (standard or URL-safe alphabet, padding optional)."""
        cleaned = text.strip().rstrip("=").replace("-", "+").replace("_", "/")
        try:
            raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise KeyringError("the master key is not base64") from None
        return cls(raw)

    def to_text(self) -> str:
        return base64.urlsafe_b64encode(self.key).decode().rstrip("=")

    @property
    def id(self) -> str:
        """A fingerprint naming this key without revealing it."""
        return hashlib.sha256(b"callbutton master key id\x00" + self.key).hexdigest()[:16]

    def __repr__(self) -> str:  # never print the key
        return f"MasterKey(id={self.id})"


def wrap(key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    nonce = os.urandom(_NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated_data)


def unwrap(key: bytes, blob: bytes, associated_data: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:_NONCE_SIZE], blob[_NONCE_SIZE:], associated_data)
    except (InvalidTag, ValueError):
        raise KeyringError("a wrapped key does not unwrap: wrong wrapping key, or the row was altered") from None


def _organisation_key_aad(organisation_id: uuid.UUID, key_id: uuid.UUID) -> bytes:
    return b"callbutton organisation key\x00" + organisation_id.bytes + key_id.bytes


def _data_key_aad(recording_id: uuid.UUID) -> bytes:
    return b"callbutton recording key\x00" + recording_id.bytes


def recording_associated_data(recording_id: uuid.UUID) -> bytes:
    """What binds a recording file to its recording id (the streaming AEAD's associated data)."""
    return b"callbutton recording\x00" + recording_id.bytes


@dataclass(frozen=True)
class DataKey:
    """A recording's key material, and how it is stored."""

    ikm: bytes
    wrapped: bytes
    organisation_key_id: uuid.UUID

    def __repr__(self) -> str:
        return f"DataKey(organisation_key_id={self.organisation_key_id})"


@dataclass(frozen=True)
class RotationReport:
    organisations: int
    data_keys: int
    new_master_key_id: str


class Keyring:
    """Keys of every organisation, under one master key, in the key store (``pool``)."""

    def __init__(self, pool: Any, master: MasterKey) -> None:
        self._pool = pool
        self._master = master

    @property
    def master_key_id(self) -> str:
        return self._master.id

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` (HKDF-SHA256 of the master key): for tokens the server signs."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"callbutton " + purpose.encode()).derive(
            self._master.key
        )

    async def check_master_key(self) -> None:
        """Refuse to run with a master key that does not wrap this key store's keys."""
        others = await self._pool.fetch(
            "SELECT DISTINCT master_key_id FROM organisation_keys WHERE retired_at IS NULL AND master_key_id <> $1",
            self._master.id,
        )
        if others:
            raise KeyringError(
                f"the organisation keys in the key store are wrapped by master key {others[0]['master_key_id']}, "
                f"but the configured master key is {self._master.id}: configure the right key "
                "(CALLBUTTON_MASTER_KEY_FILE or CALLBUTTON_MASTER_KEY)"
            )

    async def new_data_key(self, organisation_id: uuid.UUID, recording_id: uuid.UUID) -> DataKey:
        """A fresh data key for a recording, wrapped by the organisation's current key and stored.

        Wrapping and storing are one transaction holding the organisation's key lock, so a rotation
        cannot retire the wrapping key in between.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            key_id, organisation_key = await self._current_organisation_key(conn, organisation_id)
            ikm = os.urandom(IKM_SIZE)
            key = DataKey(
                ikm=ikm, wrapped=wrap(organisation_key, ikm, _data_key_aad(recording_id)), organisation_key_id=key_id
            )
            await conn.execute(
                "INSERT INTO data_keys (recording_id, organisation_id, organisation_key_id, wrapped_key) "
                "VALUES ($1, $2, $3, $4)",
                recording_id,
                organisation_id,
                key_id,
                key.wrapped,
            )
        return key

    async def data_key(self, organisation_id: uuid.UUID, recording_id: uuid.UUID) -> bytes:
        """The key material of a stored recording."""
        row = await self._pool.fetchrow(
            """
            SELECT d.wrapped_key, k.id AS key_id, k.wrapped_key AS organisation_key, k.master_key_id
            FROM data_keys d JOIN organisation_keys k ON k.id = d.organisation_key_id
            WHERE d.organisation_id = $1 AND d.recording_id = $2
            """,
            organisation_id,
            recording_id,
        )
        if row is None:
            raise KeyringError(f"the key of recording {recording_id} has been destroyed (or never existed)")
        organisation_key = self._unwrap_organisation_key(organisation_id, row["key_id"], row)
        return unwrap(organisation_key, row["wrapped_key"], _data_key_aad(recording_id))

    async def destroy(self, organisation_id: uuid.UUID, recording_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
        """Destroy the data keys of these recordings; return whose keys existed and are gone now."""
        rows = await self._pool.fetch(
            "DELETE FROM data_keys WHERE organisation_id = $1 AND recording_id = ANY($2::uuid[]) "
            "RETURNING recording_id",
            organisation_id,
            list(recording_ids),
        )
        return [r["recording_id"] for r in rows]

    async def destroy_organisation(self, organisation_id: uuid.UUID) -> tuple[int, list[uuid.UUID]]:
        """Destroy every key of an organisation: (data keys destroyed, organisation key ids destroyed)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", str(organisation_id))
            data = await conn.execute("DELETE FROM data_keys WHERE organisation_id = $1", organisation_id)
            keys = await conn.fetch(
                "DELETE FROM organisation_keys WHERE organisation_id = $1 RETURNING id", organisation_id
            )
        return int(data.split()[-1]), [r["id"] for r in keys]

    async def vacuum(self) -> None:
        """Reclaim destroyed keys' rows now rather than at autovacuum's leisure (docs/privacy.md)."""
        await self._pool.execute("VACUUM data_keys, organisation_keys")

    async def organisations(self) -> list[uuid.UUID]:
        """Every organisation with a key here."""
        return [
            r["organisation_id"]
            for r in await self._pool.fetch("SELECT DISTINCT organisation_id FROM organisation_keys")
        ]

    async def organisation_key_ids(self, organisation_id: uuid.UUID) -> list[uuid.UUID]:
        rows = await self._pool.fetch("SELECT id FROM organisation_keys WHERE organisation_id = $1", organisation_id)
        return [r["id"] for r in rows]

    async def data_keys_since(self, after: uuid.UUID | None, limit: int, older_than: datetime.datetime) -> list[Any]:
        """Data keys in recording id order (for reconciling with the main database's recordings)."""
        return list(
            await self._pool.fetch(
                "SELECT recording_id, organisation_id FROM data_keys "
                "WHERE ($1::uuid IS NULL OR recording_id > $1) AND created_at < $3 ORDER BY recording_id LIMIT $2",
                after,
                limit,
                older_than,
            )
        )

    async def rotate(self, new_master: MasterKey) -> RotationReport:
        """Give every organisation a new key wrapped by ``new_master``, re-wrap every data key under
        it, and retire the old organisation keys. Recording files are not touched. Afterwards only
        ``new_master`` is needed. Each organisation is rotated in one transaction."""
        organisations = [
            r["organisation_id"]
            for r in await self._pool.fetch(
                "SELECT DISTINCT organisation_id FROM organisation_keys WHERE retired_at IS NULL"
            )
        ]
        rewrapped = 0
        for organisation_id in organisations:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", str(organisation_id))
                old_keys = {
                    r["id"]: self._unwrap_organisation_key(organisation_id, r["id"], r)
                    for r in await conn.fetch(
                        "SELECT id, wrapped_key AS organisation_key, master_key_id FROM organisation_keys "
                        "WHERE organisation_id = $1 AND retired_at IS NULL FOR UPDATE",
                        organisation_id,
                    )
                }
                await conn.execute(
                    "UPDATE organisation_keys SET retired_at = now() WHERE organisation_id = $1 AND retired_at IS NULL",
                    organisation_id,
                )
                new_id, new_key = await self._create_organisation_key(conn, organisation_id, new_master)
                for row in await conn.fetch(
                    "SELECT recording_id, wrapped_key, organisation_key_id FROM data_keys "
                    "WHERE organisation_id = $1 FOR UPDATE",
                    organisation_id,
                ):
                    old = old_keys.get(row["organisation_key_id"])
                    if old is None:
                        raise KeyringError(f"recording {row['recording_id']} is wrapped by a retired organisation key")
                    ikm = unwrap(old, row["wrapped_key"], _data_key_aad(row["recording_id"]))
                    await conn.execute(
                        "UPDATE data_keys SET wrapped_key = $2, organisation_key_id = $3 WHERE recording_id = $1",
                        row["recording_id"],
                        wrap(new_key, ikm, _data_key_aad(row["recording_id"])),
                        new_id,
                    )
                    rewrapped += 1
                # The retired keys wrap nothing now: destroy their wrapped copies too.
                await conn.execute(
                    "UPDATE organisation_keys SET wrapped_key = '\\x'::bytea "
                    "WHERE organisation_id = $1 AND retired_at IS NOT NULL",
                    organisation_id,
                )
        self._master = new_master
        return RotationReport(organisations=len(organisations), data_keys=rewrapped, new_master_key_id=new_master.id)

    async def _current_organisation_key(self, conn: Any, organisation_id: uuid.UUID) -> tuple[uuid.UUID, bytes]:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", str(organisation_id))
        row = await conn.fetchrow(
            "SELECT id, wrapped_key AS organisation_key, master_key_id FROM organisation_keys "
            "WHERE organisation_id = $1 AND retired_at IS NULL",
            organisation_id,
        )
        if row is None:
            return await self._create_organisation_key(conn, organisation_id, self._master)
        return row["id"], self._unwrap_organisation_key(organisation_id, row["id"], row)

    async def _create_organisation_key(
        self, conn: Any, organisation_id: uuid.UUID, master: MasterKey
    ) -> tuple[uuid.UUID, bytes]:
        key_id = uuid.uuid4()
        key = os.urandom(ORGANISATION_KEY_SIZE)
        await conn.execute(
            "INSERT INTO organisation_keys (id, organisation_id, wrapped_key, master_key_id) VALUES ($1, $2, $3, $4)",
            key_id,
            organisation_id,
            wrap(master.key, key, _organisation_key_aad(organisation_id, key_id)),
            master.id,
        )
        return key_id, key

    def _unwrap_organisation_key(self, organisation_id: uuid.UUID, key_id: uuid.UUID, row: Any) -> bytes:
        if row["master_key_id"] != self._master.id:
            raise KeyringError(
                f"organisation key {key_id} is wrapped by master key {row['master_key_id']}, "
                f"not by the configured one ({self._master.id})"
            )
        return unwrap(self._master.key, row["organisation_key"], _organisation_key_aad(organisation_id, key_id))


async def adopt_legacy_keys(keystore_pool: Any, main_pool: Any) -> int:
    """Move keys that an older release kept in the main database (``organisation_keys`` and
    ``recordings.wrapped_key``, before migration 0007) into the key store, then empty them
    there. Idempotent; returns how many data keys moved."""
    if not await main_pool.fetchval("SELECT EXISTS (SELECT 1 FROM legacy_organisation_keys)"):
        return 0
    organisation_keys = await main_pool.fetch(
        "SELECT id, organisation_id, wrapped_key, master_key_id, created_at, retired_at FROM legacy_organisation_keys"
    )
    data_keys = await main_pool.fetch(
        "SELECT id, organisation_id, organisation_key_id, wrapped_key FROM recordings WHERE wrapped_key IS NOT NULL"
    )
    async with keystore_pool.acquire() as conn, conn.transaction():
        await conn.executemany(
            "INSERT INTO organisation_keys (id, organisation_id, wrapped_key, master_key_id, created_at, retired_at) "
            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            [tuple(r) for r in organisation_keys],
        )
        await conn.executemany(
            "INSERT INTO data_keys (recording_id, organisation_id, organisation_key_id, wrapped_key) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (recording_id) DO NOTHING",
            [tuple(r) for r in data_keys],
        )
    async with main_pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE recordings SET wrapped_key = NULL WHERE wrapped_key IS NOT NULL")
        await conn.execute("DELETE FROM legacy_organisation_keys")
    # Their old row versions go too (backups taken before the upgrade still hold them: rotate the
    # master key after upgrading, docs/privacy.md).
    await main_pool.execute("VACUUM recordings, legacy_organisation_keys")
    return len(data_keys)
