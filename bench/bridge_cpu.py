"""Server CPU per bridged call: callbutton's RTP-level bridge against stock aiortc relaying, one run.

A media host runs in its own process and terminates both legs of N calls, either with callbutton's
legs and bridge (``bridge``), the same recording every call into an encrypted file (``record``), or
the way a stock aiortc server relays (``relay``: each received track goes through ``MediaRelay``
into the other leg's sender, which decodes and re-encodes), or two legs connected to nothing
(``idle``: what a ringing visitor's or an available agent's standing leg costs). This process
plays both parties of every call with the load tester's peers (pre-encoded tones sent, nothing
decoded but the checks), checks that each side hears the other's tone, counts the packets each party
received, and reads the host's CPU time from /proc over a fixed window.

    .venv/bin/python bench/bridge_cpu.py --calls 10 --seconds 20

Prints CPU per call (% of one core) for each mode with the packets a party received a second (50 in a
full call), the ratios to relay, and what recording adds. Until 2026-11-29 the parties decoded what
they heard (aiortc's jitter buffer and decoder, per party): at 64 calls this process could not keep
up, the host forwarded 43% of a full call's packets, and its CPU per call read 2.3 times too low.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import structlog
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaRelay

from loadtest.peer import Impairment, LoadPeer
from loadtest.runner import HEARD_SHARE, encode_tones, tones
from media.aiortc_seam import pin_host_addresses
from media.bridge import Bridge
from media.leg import IceSettings, Leg
from media.recorder import MuxWorker, Recorder
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


async def run_mode(mode: str, calls: int, seconds: float, loop: str) -> tuple[float, float]:
    """CPU per call (% of one core) and packets received per party per second, over the window."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, __file__, "--host", mode, "--loop", loop),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None
    rng = random.Random(1)
    peers: list[LoadPeer] = []
    try:
        for index in range(calls):
            visitor_tone, agent_tone = tones(index)
            visitor, agent = (
                LoadPeer(send_tone=send, expect_tone=expect, ice_servers=[], impairment=Impairment(), rng=rng)
                for send, expect in ((visitor_tone, agent_tone), (agent_tone, visitor_tone))
            )
            request = {"visitor": await visitor.offer(), "agent": await agent.offer()}
            process.stdin.write((json.dumps(request) + "\n").encode())
            answers = json.loads(await process.stdout.readline())
            await visitor.answer(answers[0])
            await agent.answer(answers[1])
            peers += [visitor, agent]
        await asyncio.sleep(3)  # connect, and let the first second's work settle
        received = sum(peer.reception.packets for peer in peers)
        start = cpu_seconds(process.pid)
        await asyncio.sleep(seconds)
        used = cpu_seconds(process.pid) - start
        rate = (sum(peer.reception.packets for peer in peers) - received) / seconds / len(peers)
        if mode != "idle":
            now = time.monotonic()
            for peer in peers:
                peer.capture_window(now)
            await asyncio.gather(*(peer.wait_window(5) for peer in peers))
            for peer in peers:
                share, heard = peer.heard()
                if share < HEARD_SHARE:
                    raise SystemExit(f"{mode}: a party heard {heard:.0f} Hz instead of {peer.expect_tone:.0f} Hz")
        return 100 * used / seconds / calls, rate
    finally:
        process.stdin.close()
        await process.wait()
        for peer in peers:
            await peer.close()


#: Packets a party receives a second in a full call: 20 ms Opus.
FULL_RATE = 50.0


async def main(calls: int, seconds: float, modes: list[str], loop: str) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    pin_host_addresses(["127.0.0.1"])
    encode_tones(calls)
    results = {mode: await run_mode(mode, calls, seconds, loop) for mode in modes}
    print(f"{calls} concurrent calls, {seconds:g} s window, {loop} host, server CPU per call (% of one core):")
    for mode, (value, rate) in results.items():
        if mode == "idle":
            print(f"  {mode:7s} {value:6.2f}%  (two standing legs connected to nothing)")
            continue
        # Each party's packets received a second: a host (or a party) that cannot keep up delivers
        # fewer, and a call that carries less costs less; the last column scales to a full call.
        short = "  SHORT of a full call" if rate < 0.95 * FULL_RATE else ""
        print(
            f"  {mode:7s} {value:6.2f}%  {rate:5.1f} packets/s a party"
            f"  {value * FULL_RATE / max(rate, 0.1):6.2f}% per full-rate call{short}"
        )
    if "relay" not in results or "bridge" not in results:
        return
    print(f"  ratio bridge / relay: {results['bridge'][0] / results['relay'][0]:.3f}")
    if "record" in results:
        print(f"  ratio record / relay: {results['record'][0] / results['relay'][0]:.3f}")
        print(f"  recording adds {results['record'][0] - results['bridge'][0]:.2f}% of a core per call")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--modes", default="relay,bridge,record,idle", help="of relay, bridge, record, idle")
    parser.add_argument("--host", choices=("bridge", "record", "relay", "idle"), help=argparse.SUPPRESS)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="the media host's event loop")
    args = parser.parse_args()
    if args.host:
        if args.loop == "uvloop":
            import uvloop  # (imported only when compared, as the server does: server/cli.py)

            uvloop.run(host(args.host))
        else:
            asyncio.run(host(args.host))
    else:
        asyncio.run(main(args.calls, args.seconds, args.modes.split(","), args.loop))
