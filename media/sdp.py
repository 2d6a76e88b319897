"""Checking SDP offers from untrusted peers before aiortc sees them.

aiortc's parser was written for well-behaved peers: mutated SDP makes it raise AssertionError,
KeyError, IndexError, ValueError or StopIteration, and it accepts any number of candidates. Offers reach
it only through :func:`check_offer`, which bounds the input, turns every parser failure into
:class:`SdpError` with a message a client developer can act on, and checks what a call needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc.sdp import SessionDescription

MAX_SDP_BYTES = 32 * 1024
MAX_LINES = 400
MAX_CANDIDATES = 32
MAX_MEDIA_SECTIONS = 4


class SdpError(Exception):
    """An SDP offer is unusable; the message says why, without echoing the SDP."""


@dataclass(frozen=True)
class OfferSummary:
    """What we learned from an acceptable offer."""

    audio_mid: str
    candidates: int


def check_offer(sdp: str) -> OfferSummary:
    """Validate an offer for one audio call leg; raise :class:`SdpError` when it is unusable."""
    if not isinstance(sdp, str) or not sdp.strip():
        raise SdpError("the SDP offer is empty")
    if len(sdp.encode("utf-8", "surrogatepass")) > MAX_SDP_BYTES:
        raise SdpError(f"the SDP offer is larger than {MAX_SDP_BYTES} bytes")
    if "\x00" in sdp:
        raise SdpError("the SDP offer contains a NUL character")
    lines = sdp.splitlines()
    if len(lines) > MAX_LINES:
        raise SdpError(f"the SDP offer has more than {MAX_LINES} lines")
    if not lines[0].startswith("v=0"):
        raise SdpError("the SDP offer does not start with v=0")
    candidates = sum(1 for line in lines if line.startswith("a=candidate:"))
    if candidates > MAX_CANDIDATES:
        raise SdpError(f"the SDP offer has {candidates} candidates; at most {MAX_CANDIDATES} are accepted")
    if sum(1 for line in lines if line.startswith("m=")) > MAX_MEDIA_SECTIONS:
        raise SdpError(f"the SDP offer has more than {MAX_MEDIA_SECTIONS} media sections")

    try:
        description = SessionDescription.parse(sdp)
    except Exception:
        # aiortc's parser raises whatever its code trips on; the type says nothing useful.
        raise SdpError("the SDP offer could not be parsed") from None

    audio = [m for m in description.media if m.kind == "audio"]
    if len(audio) != 1:
        raise SdpError(f"the SDP offer must have exactly one audio section, it has {len(audio)}")
    others = sorted({m.kind for m in description.media if m.kind not in ("audio",)})
    if others:
        raise SdpError(f"the SDP offer has {', '.join(others)} sections; this server carries audio only")
    media = audio[0]
    if not media.rtcp_mux:
        raise SdpError("the audio section must multiplex RTP and RTCP (a=rtcp-mux)")
    if any(len(line.split()) != 2 for line in lines if line.startswith("a=msid:")):
        raise SdpError("an a=msid attribute must name a stream and a track")
    if not media.rtp.muxId:
        raise SdpError("the audio section has no a=mid attribute with a value")
    if media.direction is None:
        raise SdpError("the audio section has no direction attribute (a=sendrecv)")
    if media.direction not in ("sendrecv", "sendonly", "recvonly"):
        raise SdpError(f"the audio section's direction is {media.direction}; sendrecv is expected")
    if not any(c.mimeType.lower() == "audio/opus" and c.clockRate == 48000 for c in media.rtp.codecs):
        raise SdpError("the SDP offer does not offer Opus audio (opus/48000/2)")
    ice = media.ice
    if ice is None or not ice.usernameFragment or not ice.password:
        raise SdpError("the SDP offer has no ICE credentials (a=ice-ufrag and a=ice-pwd)")
    dtls = media.dtls
    if dtls is None or not any(f.algorithm.lower() == "sha-256" for f in dtls.fingerprints):
        raise SdpError("the SDP offer has no sha-256 DTLS fingerprint (a=fingerprint)")
    if dtls.role not in ("auto", "client", "server"):
        raise SdpError("the SDP offer has an invalid a=setup attribute")
    if not media.ice_candidates:
        # Vanilla ICE: the offer must carry the candidates, we do not wait for trickled ones.
        raise SdpError("the SDP offer has no ICE candidates; wait for ICE gathering to complete")
    return OfferSummary(audio_mid=media.rtp.muxId, candidates=len(media.ice_candidates))
