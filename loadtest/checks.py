"""Pipeline checks after a run: did the deployment store what really happened?

With an admin's credentials, each call's row is read back through the REST API (outcome, who hung
up, talk time), and each recording is downloaded, decoded, and checked for both parties' tones, the
right duration, and no gaps in either party's sound beyond the loss the load tester itself injects.
Every mismatch becomes a ``check:...`` failure on that call.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt

from loadtest.clients import ProtocolFailure
from loadtest.quality import dominant
from loadtest.runner import CallResult
from media.recording_file import RecordingFormatError, decode_tracks

DURATION_TOLERANCE = 0.5  # seconds
SETTLE_SECONDS = 10
TONE_TOLERANCE = 15.0  # Hz
RATE = 48000
AUDIBLE = 300  # a sample's magnitude (of 32767) that is sound, not a codec's noise floor
WINDOW = RATE // 800  # 1.25 ms: every window of a tone is loud, and a lost 20 ms packet leaves ~14 silent
#: The share of a party's time, between its first sound and its last, a recording may have silent
#: (in 1.25 ms windows) beyond the packet loss the load tester injects (``--loss``): the parties send tones
#: without a pause, so silence is packets the recording lost.
GAP_TOLERANCE = 0.02


async def login(http: aiohttp.ClientSession, base_url: str, email: str, password: str) -> str:
    async with http.post(
        f"{base_url}/api/v1/session", json={"email": email, "password": password}, headers={"Origin": base_url}
    ) as response:
        if response.status != 200:
            raise ProtocolFailure("admin_login_failed", f"HTTP {response.status}")
        morsel = next(iter(response.cookies.values()))
        return f"{morsel.key}={morsel.value}"


async def check_calls(
    base_url: str,
    admin: tuple[str, str],
    results: list[CallResult],
    *,
    expect_recordings: bool,
    injected_loss: float | None = 0.0,
) -> dict[str, Any]:
    """Check every call that got an id; return counts for the report. ``injected_loss``: the share of
    their packets the load tester's peers drop on purpose (``--loss``), which the recordings miss too;
    None when it also reorders them (``--jitter``): a recording keeps no packet that comes after a
    later one (Ogg positions only rise), so its gaps are not checked."""
    checked = recordings = 0
    async with aiohttp.ClientSession() as http:
        cookie = await login(http, base_url, *admin)
        for result in results:
            if result.call_id is None:
                continue
            checked += 1
            body = await _settled_call(http, base_url, cookie, result.call_id)
            if body is None:
                result.fail("check:call_row_missing")
                continue
            _check_row(result, body["call"])
            if result.answered_at is None or not expect_recordings:
                continue
            stored = [r for r in body["recordings"] if r["state"] in ("complete", "truncated")]
            if not stored:
                unfinished = any(r["state"] == "recording" for r in body["recordings"])
                result.fail("check:recording_unfinished" if unfinished else "check:recording_missing")
                continue
            recordings += 1
            async with http.get(f"{base_url}{stored[0]['file_url']}", headers={"Cookie": cookie}) as response:
                if response.status != 200:
                    result.fail("check:recording_unreadable")
                    continue
                data = await response.read()
            talk_ms = body["call"].get("talk_ms")
            carried = talk_ms / 1000 if talk_ms is not None else None
            await asyncio.to_thread(check_recording, result, data, carried, injected_loss)
    return {"calls_checked": checked, "recordings_checked": recordings}


async def _settled_call(http: aiohttp.ClientSession, base_url: str, cookie: str, call_id: str) -> dict[str, Any] | None:
    """The call as stored, once its recordings are finished (the server completes a recording
    moments after the call ends: the last calls of a run may still be finishing)."""
    body: dict[str, Any] | None = None
    for _ in range(SETTLE_SECONDS * 4):
        async with http.get(f"{base_url}/api/v1/calls/{call_id}", headers={"Cookie": cookie}) as response:
            if response.status != 200:
                return None
            body = dict(await response.json())
        if body["call"]["state"] == "ended" and all(r["state"] != "recording" for r in body["recordings"]):
            return body
        await asyncio.sleep(0.25)
    return body


def _check_row(result: CallResult, call: dict[str, Any]) -> None:
    if result.answered_at is None:
        if call["outcome"] == "answered":
            result.fail("check:row_says_answered")
        return
    if call["outcome"] != "answered":
        result.fail(f"check:row_outcome_{call['outcome']}")
    if result.hung_up_by and call["end_reason"] != f"{result.hung_up_by}_hangup":
        result.fail(f"check:row_end_reason_{call['end_reason']}")
    if result.talk_seconds is not None and call["talk_ms"] is not None:
        if abs(call["talk_ms"] / 1000 - result.talk_seconds) > DURATION_TOLERANCE:
            result.fail("check:row_talk_time", f"{call['talk_ms'] / 1000:.2f} s stored for {result.talk_seconds} s")


def check_recording(result: CallResult, data: bytes, carried: float | None, injected_loss: float | None = 0.0) -> None:
    """Both parties' tones on their channels, as long as the call the server says it carried
    (``carried``: the row's talk time, answered to ended on the server's clock; the load tester's own
    talk time, which also holds the server's delay in handling the accept, is checked against the row),
    and each party's sound whole: no more of it missing than ``injected_loss`` and ``GAP_TOLERANCE``
    (unless ``injected_loss`` is None)."""
    try:
        tracks = decode_tracks(data)
    except RecordingFormatError:
        result.fail("check:recording_undecodable")
        return
    middle = slice(len(tracks.visitor) // 4, 3 * len(tracks.visitor) // 4)
    visitor, agent = dominant(tracks.visitor[middle]), dominant(tracks.agent[middle])
    if visitor is None or abs(visitor - result.visitor_tone) > TONE_TOLERANCE:
        result.fail("check:recording_visitor_channel", f"{visitor} Hz where the visitor sent {result.visitor_tone} Hz")
    if agent is None or abs(agent - result.agent_tone) > TONE_TOLERANCE:
        result.fail("check:recording_agent_channel", f"{agent} Hz where the agent sent {result.agent_tone} Hz")
    talk = carried if carried is not None else result.talk_seconds
    if talk is not None and abs(tracks.duration_seconds - talk) > DURATION_TOLERANCE:
        result.fail(
            "check:recording_duration",
            f"{tracks.duration_seconds:.2f} s recorded for {talk:.2f} s of talk ({result.talk_seconds} s at the "
            f"load tester); visitor heard {_audible(tracks.visitor)}, agent {_audible(tracks.agent)}",
        )
    if injected_loss is None:
        return
    missing = {party: _missing(track) for party, track in (("visitor", tracks.visitor), ("agent", tracks.agent))}
    if max(missing.values()) > injected_loss + GAP_TOLERANCE:
        result.fail(
            "check:recording_gaps",
            ", ".join(f"{share:.1%} of the {party}'s sound missing" for party, share in missing.items())
            + f" (the load tester dropped {injected_loss:.1%} of its packets on purpose)",
        )


def _missing(track: npt.NDArray[np.int16]) -> float:
    """The share of a track's 1.25 ms windows, from its first sound to its last, that are silent."""
    peaks = np.abs(track[: len(track) // WINDOW * WINDOW].astype(np.int32)).reshape(-1, WINDOW).max(axis=1)
    loud = np.flatnonzero(peaks > AUDIBLE)
    if not len(loud):
        return 0.0  # no sound at all: the tone checks say so
    span = peaks[loud[0] : loud[-1] + 1]
    return float(np.count_nonzero(span <= AUDIBLE) / len(span))


def _audible(track: npt.NDArray[np.int16]) -> str:
    """Where a track has sound: "from 0.02 to 30.11 s", and the longest silence within."""
    loud = np.flatnonzero(np.abs(track.astype(np.int32)) > AUDIBLE)
    if not len(loud):
        return "nothing"
    gaps = np.diff(loud)
    longest = int(gaps.argmax()) if len(gaps) else 0
    silence = (
        f", silent {loud[longest] / RATE:.2f}-{loud[longest + 1] / RATE:.2f} s"
        if len(gaps) and gaps[longest] > RATE // 10
        else ""
    )
    return f"from {loud[0] / RATE:.2f} to {loud[-1] / RATE:.2f} s{silence}"
