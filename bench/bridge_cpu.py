"""Server CPU per bridged call: callbutton's RTP-level bridge against stock aiortc relaying, one run.

A media host runs in its own process and terminates both legs of N calls, either with callbutton's
legs and bridge (``bridge``), the same recording every call into an encrypted file (``record``), or
the way a stock aiortc server relays (``relay``: each received track goes through ``MediaRelay``
into the other leg's sender, which decodes and re-encodes), or two legs connected to nothing
(``idle``: what a ringing visitor's or an available agent's standing leg costs). This process
plays both parties of every call with synthetic peers (pre-encoded tones), checks that each side hears
the other's tone, and reads the host's CPU time from /proc over a fixed window.

    .venv/bin/python bench/bridge_cpu.py --calls 10 --seconds 20

Prints CPU per call (% of one core) for each mode, the ratios to relay, and what recording adds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import structlog
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from media.aiortc_seam import pin_host_addresses
from media.bridge import Bridge
from media.leg import IceSettings, Leg
from media.recorder import MuxWorker, Recorder
from media.synthetic import AudioSink, OpusLoopTrack, dominant_frequency
from storage.keys import recording_associated_data
from storage.recordings import EncryptedFile

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- the media host (a subprocess) -------------------------------------------------------------


async def host(mode: str) -> None:
    # stdout carries the answers: keep log lines off it.
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    pin_host_addresses(["127.0.0.1"])
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    keep: list[Any] = []
    recorders: list[Recorder] = []
    relay = MediaRelay()
    mux = MuxWorker()
    folder = Path(tempfile.mkdtemp(prefix="bench-recordings-"))
    while line := await reader.readline():
        request = json.loads(line)
        if mode in ("bridge", "record", "idle"):
            visitor, agent = Leg("visitor", IceSettings()), Leg("agent", IceSettings())
            answers = [await visitor.answer(request["visitor"]), await agent.answer(request["agent"])]
            bridge = Bridge(visitor)
            if mode == "idle":
                pass  # two standing legs, connected to nothing: what an available agent costs
            elif mode == "record":
                # The server's recording path without the database: a recorder into an encrypted file.
                recording_id = uuid.uuid4()
                recorder = Recorder(mux)
                bridge.connect(agent, recorder)
                recorder.attach(
                    EncryptedFile(
                        folder / f"{recording_id}.cbrec", os.urandom(32), recording_associated_data(recording_id)
                    )
                )
                recorders.append(recorder)
            else:
                bridge.connect(agent)
            keep += [visitor, agent, bridge]
        else:
            pcs = [RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2)]
            for pc, other in ((pcs[0], pcs[1]), (pcs[1], pcs[0])):
                pc.on("track", lambda track, other=other: other.addTrack(relay.subscribe(track)))
            answers = []
            for pc, offer in zip(pcs, (request["visitor"], request["agent"]), strict=True):
                await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            for pc in pcs:
                await pc.setLocalDescription(await pc.createAnswer())
                answers.append(pc.localDescription.sdp)
            keep += pcs
        print(json.dumps(answers), flush=True)
    for recorder in recorders:
        await recorder.close()
    for item in keep:
        await item.close()
    mux.close()
    shutil.rmtree(folder, ignore_errors=True)


# --- the driver ------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Party:
    def __init__(self, tone: float) -> None:
        self.tone = tone
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTrack(OpusLoopTrack.of_tone(tone))
        self.sink: AudioSink | None = None
        self.pc.on("track", self._track)

    def _track(self, track: Any) -> None:
        self.sink = AudioSink(track, seconds=1.0)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp


async def run_mode(mode: str, calls: int, seconds: float) -> float:
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--host", mode, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    parties: list[tuple[Party, Party]] = []
    try:
        for index in range(calls):
            visitor, agent = Party(300 + 20 * index), Party(1200 + 20 * index)
            request = {"visitor": await visitor.offer(), "agent": await agent.offer()}
            process.stdin.write((json.dumps(request) + "\n").encode())
            answers = json.loads(await process.stdout.readline())
            await visitor.pc.setRemoteDescription(RTCSessionDescription(answers[0], "answer"))
            await agent.pc.setRemoteDescription(RTCSessionDescription(answers[1], "answer"))
            parties.append((visitor, agent))
        await asyncio.sleep(3)  # connect, and let the first second's work settle
        start = cpu_seconds(process.pid)
        await asyncio.sleep(seconds)
        used = cpu_seconds(process.pid) - start
        for visitor, agent in parties if mode != "idle" else []:
            for listener, speaker in ((visitor, agent), (agent, visitor)):
                heard = dominant_frequency(listener.sink.samples()) if listener.sink else None
                if heard is None or abs(heard - speaker.tone) > 15:
                    raise SystemExit(f"{mode}: a party heard {heard} Hz instead of {speaker.tone} Hz")
        return 100 * used / seconds / calls
    finally:
        process.stdin.close()
        await process.wait()
        for visitor, agent in parties:
            for party in (visitor, agent):
                if party.sink is not None:
                    await party.sink.close()
                await party.pc.close()


async def main(calls: int, seconds: float, modes: list[str]) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    pin_host_addresses(["127.0.0.1"])
    results = {mode: await run_mode(mode, calls, seconds) for mode in modes}
    print(f"{calls} concurrent calls, {seconds:g} s window, server CPU per call (% of one core):")
    for mode, value in results.items():
        print(f"  {mode:7s} {value:6.2f}%" + ("  (two standing legs connected to nothing)" if mode == "idle" else ""))
    if "relay" not in results:
        return
    print(f"  ratio bridge / relay: {results['bridge'] / results['relay']:.3f}")
    print(f"  ratio record / relay: {results['record'] / results['relay']:.3f}")
    print(f"  recording adds {results['record'] - results['bridge']:.2f}% of a core per call")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--modes", default="relay,bridge,record,idle", help="of relay, bridge, record, idle")
    parser.add_argument("--host", choices=("bridge", "record", "relay", "idle"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.host:
        asyncio.run(host(args.host))
    else:
        asyncio.run(main(args.calls, args.seconds, args.modes.split(",")))
