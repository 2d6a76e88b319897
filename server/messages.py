"""Signalling messages, protocol version 1: one frozen dataclass per message type.

Messages a client sends have ``parse(obj)``, which validates an untrusted JSON object and raises
:class:`ProtocolError` with a message naming the offending field; messages the server sends have
``to_json()``. ``docs/protocol.md`` documents every one of them; keep the two in step.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from server.body import unstorable_text

PROTOCOL_VERSION = 1
MAX_SDP_CHARS = 32 * 1024
MAX_URL_CHARS = 2048


class ProtocolError(Exception):
    """A client broke the protocol. ``code`` is machine-readable, the message is for developers."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


class _Fields:
    """Typed access to an untrusted message object, with errors that name the field."""

    def __init__(self, obj: dict[str, Any], type_name: str, allowed: frozenset[str]) -> None:
        extra = sorted(k for k in obj if k not in allowed and k != "type")
        if extra:
            raise ProtocolError("bad_message", f"unknown field {extra[0]!r} in {type_name!r}", type_name)
        self._obj = obj
        self._type = type_name

    def _missing(self, name: str) -> ProtocolError:
        return ProtocolError("bad_message", f"missing field {name!r} in {self._type!r}", self._type)

    def _wrong(self, name: str, expected: str) -> ProtocolError:
        return ProtocolError("bad_message", f"field {name!r} in {self._type!r} must be {expected}", self._type)

    def text(self, name: str, *, max_chars: int, required: bool = True) -> str | None:
        if name not in self._obj or self._obj[name] is None:
            if required:
                raise self._missing(name)
            return None
        value = self._obj[name]
        if not isinstance(value, str):
            raise self._wrong(name, "a string")
        if len(value) > max_chars:
            raise self._wrong(name, f"at most {max_chars} characters")
        return value

    def required_text(self, name: str, *, max_chars: int) -> str:
        value = self.text(name, max_chars=max_chars)
        assert value is not None
        return value

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.required_text(name, max_chars=64)
        if value not in choices:
            raise self._wrong(name, "one of " + ", ".join(repr(c) for c in choices))
        return value

    def uuid(self, name: str) -> uuid.UUID:
        value = self.required_text(name, max_chars=64)
        try:
            return uuid.UUID(value)
        except ValueError:
            raise self._wrong(name, "a UUID") from None


def _fields(obj: dict[str, Any], cls: Any) -> _Fields:
    return _Fields(obj, cls.type, frozenset(f.name for f in dataclasses.fields(cls)))


# --- sent by visitors ---------------------------------------------------------------------------


VISITOR_FIELDS = {"name": 200, "email": 320, "phone": 32}


@dataclass(frozen=True)
class CallRequest:
    """The visitor asks for a call, with the SDP offer for its leg and the pre-call form's answers."""

    type: ClassVar[str] = "call"
    sdp: str
    page_url: str | None = None
    visitor: dict[str, str] | None = None

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> Self:
        f = _fields(obj, cls)
        page_url = f.text("page_url", max_chars=MAX_URL_CHARS, required=False)
        if page_url is not None and not page_url.startswith(("http://", "https://")):
            raise ProtocolError("bad_message", "field 'page_url' in 'call' must be an http(s) URL", cls.type)
        visitor = obj.get("visitor")
        if visitor is not None:
            if not isinstance(visitor, dict):
                raise ProtocolError("bad_message", "field 'visitor' in 'call' must be an object", cls.type)
            answers = _Fields(visitor, "call.visitor", frozenset(VISITOR_FIELDS))
            visitor = {
                name: value.strip()
                for name, limit in VISITOR_FIELDS.items()
                if (value := answers.text(name, max_chars=limit, required=False)) is not None and value.strip()
            }
        return cls(sdp=f.required_text("sdp", max_chars=MAX_SDP_CHARS), page_url=page_url, visitor=visitor or None)


@dataclass(frozen=True)
class VisitorHangup:
    type: ClassVar[str] = "hangup"

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> Self:
        _fields(obj, cls)
        return cls()


# --- sent by agents -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """The agent's SDP offer for its standing leg (sent again to replace a failed leg)."""

    type: ClassVar[str] = "offer"
    sdp: str

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> Self:
        return cls(sdp=_fields(obj, cls).required_text("sdp", max_chars=MAX_SDP_CHARS))


@dataclass(frozen=True)
class SetPresence:
    type: ClassVar[str] = "presence"
    status: str

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> Self:
        return cls(status=_fields(obj, cls).choice("status", ("available", "away")))


@dataclass(frozen=True)
class Accept:
    type: ClassVar[str] = "accept"
    call_id: uuid.UUID

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> Self:
        return cls(call_id=_fields(obj, cls).uuid("call_id"))


@dataclass(frozen=True)
class Decline:
    type: ClassVar[str] = "decline"
    call_id: uuid.UUID

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> Self:
        return cls(call_id=_fields(obj, cls).uuid("call_id"))


@dataclass(frozen=True)
class AgentHangup:
    type: ClassVar[str] = "hangup"
    call_id: uuid.UUID

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> Self:
        return cls(call_id=_fields(obj, cls).uuid("call_id"))


VisitorMessage = CallRequest | VisitorHangup
AgentMessage = Offer | SetPresence | Accept | Decline | AgentHangup

VISITOR_MESSAGES: dict[str, Any] = {m.type: m for m in (CallRequest, VisitorHangup)}
AGENT_MESSAGES: dict[str, Any] = {m.type: m for m in (Offer, SetPresence, Accept, Decline, AgentHangup)}


def parse(text: str | bytes, registry: dict[str, Any]) -> Any:
    """Parse one message of a socket whose message types are ``registry``."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_json", "the message is not valid JSON") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_message", "a message must be a JSON object")
    if problem := unstorable_text(obj):
        raise ProtocolError("bad_message", f"{problem} in the message")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_message", "missing field 'type' (a string)")
    cls = registry.get(kind)
    if cls is None:
        known = ", ".join(sorted(registry))
        raise ProtocolError("unknown_type", f"unknown message type {kind[:64]!r}; expected one of {known}")
    return cls.parse(obj)


# --- sent by the server -------------------------------------------------------------------------


class _Outgoing:
    type: ClassVar[str]

    def to_json(self) -> str:
        return self._json

    @functools.cached_property
    def _json(self) -> str:
        # Once per message, however many sockets it goes to (a ring-all call's ring goes to every
        # agent's every tab). Messages are frozen, so the text never goes stale.
        body: dict[str, Any] = {"type": self.type}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None:
                continue
            body[f.name] = str(value) if isinstance(value, uuid.UUID) else value
        return json.dumps(body, separators=(",", ":"))


@dataclass(frozen=True)
class Hello(_Outgoing):
    """First message on every socket."""

    type: ClassVar[str] = "hello"
    role: str
    protocol: int = PROTOCOL_VERSION
    button: dict[str, Any] | None = None
    agent: dict[str, Any] | None = None
    ice_servers: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Answer(_Outgoing):
    type: ClassVar[str] = "answer"
    sdp: str


@dataclass(frozen=True)
class CallState(_Outgoing):
    """A call's state as its visitor or its answering agent sees it.

    While ``queued``: ``position`` (1 is next) and whether an agent is ``ringing`` for it. When it
    ends: ``reason``, ``detail``, a ``message`` to show (a closed button's words) and, after a
    conversation, the visitor's ``rating_token``.
    """

    type: ClassVar[str] = "call_state"
    call_id: uuid.UUID
    state: str
    reason: str | None = None
    detail: str | None = None
    position: int | None = None
    ringing: bool | None = None
    message: str | None = None
    rating_token: str | None = None
    #: authorises sending clips with this call (``/api/v1/widget/{key}/clips``), while it lasts
    clip_token: str | None = None


@dataclass(frozen=True)
class Ring(_Outgoing):
    """An incoming call for an agent, with what the agent needs to decide: the button, the
    visitor's form answers and page, how many earlier calls came from the same email or phone."""

    type: ClassVar[str] = "ring"
    call_id: uuid.UUID
    button: dict[str, Any]
    visitor: dict[str, Any]
    ring_timeout: float
    direction: str = "inbound"


@dataclass(frozen=True)
class CallDetails(_Outgoing):
    """What became known of a call's visitor after its ring went out: how many earlier calls came
    from the same email or phone (read from the database, which the ring does not wait for)."""

    type: ClassVar[str] = "call_details"
    call_id: uuid.UUID
    visitor: dict[str, Any]


@dataclass(frozen=True)
class RingStopped(_Outgoing):
    type: ClassVar[str] = "ring_stopped"
    call_id: uuid.UUID
    reason: str


@dataclass(frozen=True)
class Presence(_Outgoing):
    """The agent's presence; ``wants_available`` is its own choice (kept across a page reload),
    ``wrap_up_seconds`` the wrap-up left."""

    type: ClassVar[str] = "presence"
    status: str
    wants_available: bool | None = None
    wrap_up_seconds: float | None = None


@dataclass(frozen=True)
class CallbackNotice(_Outgoing):
    """A new callback request, for agents' lists."""

    type: ClassVar[str] = "callback"
    callback: dict[str, Any]


@dataclass(frozen=True)
class ClipNotice(_Outgoing):
    """A clip the caller sent: to the agent of the call (or, with a callback request, every agent)."""

    type: ClassVar[str] = "clip"
    clip: dict[str, Any]


@dataclass(frozen=True)
class LegState(_Outgoing):
    type: ClassVar[str] = "leg_state"
    state: str


@dataclass(frozen=True)
class Error(_Outgoing):
    type: ClassVar[str] = "error"
    code: str
    message: str
    ref: str | None = None


Outgoing = (
    Hello
    | Answer
    | CallState
    | Ring
    | CallDetails
    | RingStopped
    | Presence
    | LegState
    | Error
    | CallbackNotice
    | ClipNotice
)
