"""The baseline for benchmarks: callbutton's server with the media path a stock aiortc server has.

Same signalling, routing, database and recordings off; but each leg is a plain aiortc peer
connection whose received track is decoded by aiortc, fanned out by ``MediaRelay`` and re-encoded by
the other leg's sender (the way aiortc's examples relay). Only the media classes are swapped, so a
load test against this and against ``callbutton serve`` measures the media path and nothing else.

    .venv/bin/python bench/stock_relay.py      # then as `callbutton serve` (same CALLBUTTON_* settings)
"""

from __future__ import annotations

import asyncio
import fractions
import sys
import time
from collections.abc import Callable
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError
from av.frame import Frame

import server.routing
from media.aiortc_seam import Drops
from media.leg import IceSettings, LegCounters, LegState
from media.sdp import SdpError, check_offer

_RELAY = MediaRelay()


class Silence(MediaStreamTrack):
    """20 ms frames of silence in the format aiortc decodes Opus to (48 kHz stereo s16): a sender's
    resampler is set up by its first frame and refuses frames of another format after it."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._start: float | None = None
        self._index = 0

    async def recv(self) -> Frame:
        if self._start is None:
            self._start = time.monotonic()
        await asyncio.sleep(max(0.0, self._start + self._index * 0.02 - time.monotonic()))
        frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate = 48000
        frame.pts = self._index * 960
        frame.time_base = fractions.Fraction(1, 48000)
        self._index += 1
        return frame


class SwitchableTrack(MediaStreamTrack):
    """What a stock leg sends: silence until connected, then the other party's relayed track."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.silence = Silence()
        self.source: MediaStreamTrack = self.silence

    async def recv(self) -> Frame:
        while True:
            source = self.source
            try:
                frame = await source.recv()
            except MediaStreamError:
                if source is self.source:
                    raise
                continue  # the source ended because it was switched away from: read the new one
            assert isinstance(frame, Frame)
            return frame


class StockLeg:
    """A leg with aiortc's own receive (decode) and send (encode) paths; the Leg interface."""

    def __init__(self, role: str, ice: IceSettings) -> None:
        self.role = role
        self.state = LegState.NEW
        self.inbound: Any = None
        self.on_state: Callable[[Any, LegState], None] | None = None
        self.counters = LegCounters()
        self.drops = Drops()  # what the server reads of every leg (livecall.leg_drops); nothing dropped here
        self.connected = asyncio.Event()
        self.outgoing = SwitchableTrack()
        self.remote: MediaStreamTrack | None = None
        self._pc = RTCPeerConnection(ice.rtc_configuration())
        self._pc.on("connectionstatechange", self._changed)
        self._pc.on("track", self._track)

    def bind(self, **context: str) -> None:
        pass

    async def answer(self, offer_sdp: str) -> str:
        check_offer(offer_sdp)
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            self._pc.addTrack(self.outgoing)
            await self._pc.setLocalDescription(await self._pc.createAnswer())
        except Exception as exc:
            await self.close()
            raise SdpError(f"the SDP offer was refused: {exc}") from None
        self._set(LegState.CONNECTING)
        return str(self._pc.localDescription.sdp)

    def send(self, source: object, packet: object) -> None:
        pass

    async def close(self) -> None:
        if self.state is not LegState.CLOSED:
            self._set(LegState.CLOSED)
            await self._pc.close()

    def _track(self, track: MediaStreamTrack) -> None:
        self.remote = track

    def _changed(self) -> None:
        state = {"connected": LegState.CONNECTED, "failed": LegState.FAILED, "closed": LegState.CLOSED}.get(
            self._pc.connectionState
        )
        if state is not None and state is not self.state:
            self._set(state)

    def _set(self, state: LegState) -> None:
        if self.state is LegState.CLOSED:
            return
        self.state = state
        if state is LegState.CONNECTED:
            self.connected.set()
        if self.on_state is not None:
            self.on_state(self, state)


class StockBridge:
    """Relays decoded audio between the legs through MediaRelay; silence before and after."""

    def __init__(self, visitor: StockLeg) -> None:
        self.visitor = visitor
        self.agent: StockLeg | None = None
        self.forwarded = 0  # what the server reads of every bridge (/metrics); not counted here
        self._proxies: list[MediaStreamTrack] = []

    def start_ringback(self) -> None:
        pass  # the baseline plays silence while ringing

    def connect(self, agent: StockLeg, recorder: object = None) -> None:
        self.agent = agent
        for listener, speaker in ((self.visitor, agent), (agent, self.visitor)):
            if speaker.remote is not None:
                proxy = _RELAY.subscribe(speaker.remote)
                self._proxies.append(proxy)
                listener.outgoing.source = proxy

    async def close(self) -> None:
        if self.agent is not None:
            self.agent.outgoing.source = self.agent.outgoing.silence
            self.agent = None
        for proxy in self._proxies:
            # Wake a sender waiting on this subscriber (stop() alone leaves its read pending forever,
            # aiortc 1.16 contrib/media.py), then let MediaRelay forget it (or its queue would grow).
            proxy._queue.put_nowait(None)  # type: ignore[attr-defined]
            proxy.stop()
        self._proxies.clear()


def main() -> int:
    server.routing.Leg = StockLeg  # type: ignore[misc,assignment]
    server.routing.Bridge = StockBridge  # type: ignore[misc,assignment]
    from server.cli import main as cli

    return cli(["serve", *sys.argv[1:]])


if __name__ == "__main__":
    raise SystemExit(main())
