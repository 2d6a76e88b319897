"""Who may send clips with which call or callback request: tokens that are HMACs of the call's or
request's id under a key derived from the master key (nothing stored, nothing to guess); and a
clip as staff see it in JSON."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from typing import Any

from storage.clips import ClipRecord


class ClipTokens:
    """Who may send clips with which call or callback request."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def _token(self, kind: bytes, object_id: uuid.UUID) -> str:
        digest = hmac.new(self._key, kind + b"\x00" + object_id.bytes, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:24]).decode()

    def for_call(self, call_id: uuid.UUID) -> str:
        return self._token(b"call", call_id)

    def for_callback(self, callback_id: uuid.UUID) -> str:
        return self._token(b"callback", callback_id)

    def allows(self, token: str | None, record: ClipRecord) -> bool:
        if not token:
            return False
        expected = (
            self.for_call(record.call_id) if record.call_id is not None else self.for_callback(record.callback_id)  # type: ignore[arg-type]
        )
        return hmac.compare_digest(token.encode(), expected.encode())


def clip_json(record: ClipRecord) -> dict[str, Any]:
    return {
        "id": str(record.id),
        "call_id": str(record.call_id) if record.call_id else None,
        "callback_id": str(record.callback_id) if record.callback_id else None,
        "name": record.name,
        "kind": record.kind,
        "media_type": record.media_type,
        "byte_size": record.byte_size,
        "ready_at": record.ready_at.isoformat() if record.ready_at else None,
        "content_url": f"/api/v1/clips/{record.id}/content",
    }
