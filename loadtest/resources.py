"""Sampling a local server process's CPU and memory from /proc, for the report's plots (until the
server has a metrics endpoint to read them from)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _rss_mib(pid: int) -> float:
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * _PAGE / 2**20


async def sample(pid: int, samples: list[dict[str, float]], began: float, interval: float = 1.0) -> None:
    """Append {t, cpu_percent, rss_mib, fds} every ``interval`` until cancelled or the process ends."""
    last_time, last_cpu = time.monotonic(), _cpu_seconds(pid)
    while True:
        await asyncio.sleep(interval)
        try:
            now, cpu = time.monotonic(), _cpu_seconds(pid)
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            rss = _rss_mib(pid)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            return
        samples.append(
            {
                "t": round(now - began, 2),
                "cpu_percent": round(100 * (cpu - last_cpu) / (now - last_time), 1),
                "rss_mib": round(rss, 1),
                "fds": fds,
            }
        )
        last_time, last_cpu = now, cpu
