"""Where a server's memory goes: ``callbutton serve`` under tracemalloc, snapshots on a signal, and
the difference of two snapshots by the library that asked for the memory.

Used by ``bench/soak.py --trace-memory``: the server runs as ``python bench/memory_trace.py FOLDER``
and each SIGUSR1 writes ``FOLDER/snapshot-N.pickle`` (tracemalloc, after a full collection) and
``FOLDER/snapshot-N.json`` (RSS, glibc's heap figures, live objects by type). tracemalloc sees what
Python allocates (objects, buffers made by Python code); what C libraries allocate themselves
(OpenSSL, libsrtp, FFmpeg, libopus) shows only in glibc's figures, so the report gives both, and the
difference between them is the memory of the C libraries.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import pickle
import signal
import sys
import sysconfig
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Frames kept per allocation: enough to walk out of the standard library to the caller that matters.
FRAMES = 6
_STDLIB = sysconfig.get_paths()["stdlib"]
#: Types whose live instances the snapshots count (a call leaks when these outlive it).
COUNTED = (
    "RTCPeerConnection", "RTCDtlsTransport", "RTCIceTransport", "Connection", "Leg", "Bridge", "Recorder",
    "LiveCall", "Call", "WebSocketResponse", "Task", "Future", "Handle", "TimerHandle", "RtpPacket", "bytes",
    "dict", "list", "tuple", "function", "cell",
)  # fmt: skip


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
    )]  # fmt: skip


def heap() -> dict[str, int]:
    """glibc's figures for the whole process: bytes in use (small blocks and mmapped), free in the heap."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    return {"in_use": info.uordblks + info.hblkhd, "free": info.fordblks, "arena": info.arena, "mmapped": info.hblkhd}


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def owner(traceback: tracemalloc.Traceback) -> str:
    """Who asked for the memory: the innermost frame outside the standard library, as its package
    (``aiortc``, ``av``) or, for this repository's code, its module (``media/leg.py``)."""
    for frame in traceback:  # innermost first
        name = frame.filename
        if name.startswith(_STDLIB) and "site-packages" not in name:
            continue
        if "site-packages/" in name:
            return name.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
        if name.startswith(str(ROOT)):
            return name[len(str(ROOT)) + 1 :]
        return name
    return "python (standard library)"


def snapshot(folder: Path, index: int) -> None:
    gc.collect()
    traced = tracemalloc.take_snapshot()
    with open(folder / f"snapshot-{index}.pickle", "wb") as f:
        pickle.dump(traced, f)
    kinds = collections.Counter(type(o).__name__ for o in gc.get_objects())
    figures = {
        "rss_kib": rss_kib(),
        "heap": heap(),
        "traced": tracemalloc.get_traced_memory()[0],
        "objects": {name: kinds.get(name, 0) for name in COUNTED},
        "all_objects": sum(kinds.values()),
    }
    (folder / f"snapshot-{index}.json").write_text(json.dumps(figures) + "\n")


def serve(folder: Path) -> int:
    """``callbutton serve`` with tracemalloc on from the start; SIGUSR1 writes the next snapshot."""
    from server.cli import main as cli

    tracemalloc.start(FRAMES)
    taken = 0

    def on_signal(*_: object) -> None:
        nonlocal taken
        taken += 1
        snapshot(folder, taken)

    signal.signal(signal.SIGUSR1, on_signal)
    return cli(["serve"])


def compare(folder: Path, before: int, after: int, per: float, top: int = 14) -> list[str]:
    """The difference from snapshot ``before`` to ``after``, divided by ``per`` (calls), as lines."""
    figures = [json.loads((folder / f"snapshot-{i}.json").read_text()) for i in (before, after)]
    snapshots: list[Any] = []
    for i in (before, after):
        with open(folder / f"snapshot-{i}.pickle", "rb") as f:
            snapshots.append(pickle.load(f))
    by_owner: collections.Counter[str] = collections.Counter()
    for i, sign in ((0, -1), (1, 1)):
        for trace in snapshots[i].traces:
            by_owner[owner(trace.traceback)] += sign * trace.size
    first, second = figures
    kib = 1024 * per
    rss = (second["rss_kib"] - first["rss_kib"]) / per
    in_use = (second["heap"]["in_use"] - first["heap"]["in_use"]) / kib
    traced = (second["traced"] - first["traced"]) / kib
    lines = [
        f"RSS {rss:+.0f} KiB a call; glibc heap in use {in_use:+.0f} KiB (free in the heap "
        f"{first['heap']['free'] / 2**20:.1f} -> {second['heap']['free'] / 2**20:.1f} MiB); "
        f"Python's allocations (traced) {traced:+.0f} KiB; the C libraries' own {in_use - traced:+.0f} KiB",
        "Python's allocations by who asked (KiB a call):",
    ]
    for name, size in by_owner.most_common(top):
        lines.append(f"  {size / kib:8.1f}  {name}")
    lines.append(
        "live objects (a call's share): "
        + ", ".join(
            f"{name} {(second['objects'][name] - first['objects'][name]) / per:+.1f}"
            for name in COUNTED
            if second["objects"][name] != first["objects"][name]
        )
    )
    return lines


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1])))
