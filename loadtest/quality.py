"""What the synthetic parties measure about the audio they receive: tones, loss, jitter, MOS."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

RATE = 48000


def tone_share(samples: npt.NDArray[np.int16], frequency: float, width: float = 15.0) -> float:
    """The share (0 to 1) of the signal's power within ``width`` Hz of ``frequency``."""
    if len(samples) < 240:
        return 0.0
    data = samples.astype(np.float64)
    power = np.abs(np.fft.rfft(data * np.hanning(len(data)))) ** 2
    power[0] = 0
    total = float(power.sum())
    if total <= 0:
        return 0.0
    frequencies = np.fft.rfftfreq(len(data), 1 / RATE)
    return float(power[np.abs(frequencies - frequency) <= max(width, RATE / len(data))].sum()) / total


def dominant(samples: npt.NDArray[np.int16]) -> float | None:
    """The strongest frequency, or None for (near) silence."""
    if len(samples) < RATE // 20:
        return None
    data = samples.astype(np.float64)
    if math.sqrt(float(np.mean(data**2))) < 100:
        return None
    spectrum = np.abs(np.fft.rfft(data * np.hanning(len(data))))
    spectrum[0] = 0
    return float(np.fft.rfftfreq(len(data), 1 / RATE)[int(np.argmax(spectrum))])


def mos(loss_percent: float, jitter_ms: float, rtt_ms: float | None, codec_ie: float = 0.0, bpl: float = 10.0) -> float:
    """A MOS estimate from the ITU-T G.107 E-model (simplified, wideband-agnostic).

    Delay impairment from the one-way mouth-to-ear delay, estimated as half the round trip (or
    20 ms without one) plus a jitter buffer of twice the jitter plus one frame; equipment
    impairment from random loss with Opus's packet-loss robustness (Bpl ~ 10, Ie ~ 0).
    """
    one_way = (rtt_ms / 2 if rtt_ms is not None else 20.0) + 2 * jitter_ms + 20.0
    delay_impairment = 0.024 * one_way + (0.11 * (one_way - 177.3) if one_way > 177.3 else 0.0)
    loss = max(0.0, min(100.0, loss_percent))
    equipment = codec_ie + (95 - codec_ie) * loss / (loss + bpl)
    r = max(0.0, min(100.0, 93.2 - delay_impairment - equipment))
    return round(1 + 0.035 * r + r * (r - 60) * (100 - r) * 7e-6, 2)


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50": None, "p95": None, "p99": None, "max": None}
    data = np.array(values, dtype=np.float64)
    return {
        "count": len(values),
        "p50": round(float(np.percentile(data, 50)), 2),
        "p95": round(float(np.percentile(data, 95)), 2),
        "p99": round(float(np.percentile(data, 99)), 2),
        "max": round(float(data.max()), 2),
    }
