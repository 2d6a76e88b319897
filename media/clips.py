"""Checking the files visitors send to support ("clips") and removing what they reveal about the sender.

A clip is accepted when its content (magic bytes, then a real parse) is a JPEG or PNG photo, a WebM or
MP4 video, or a PDF document; the name and the type the browser declared are never trusted, and a
declared type of another family is refused. What is stored is ``CleanClip.data``:

- JPEG: the marker segments are walked and every APPn segment but APP0 (JFIF, its thumbnail cut) and
  APP14 (Adobe, which changes how colours decode) is dropped, with COM comments; the entropy-coded data
  is copied byte for byte, so the decoded pixels are identical. One exception keeps phone photos
  upright: when the EXIF Orientation is not 1, a fresh EXIF holding only that tag is written right after
  SOI/APP0 (no GPS, make, model, serial number or dates survive). ICC profiles (APP2) are dropped too, so
  wide-gamut photos may display with slightly less saturated colours. Secondary images appended after
  the primary's EOI (multi-picture/Ultra HDR gain maps) are dropped; anything else after EOI is refused.
- PNG: chunks are copied whole (CRCs stay valid) except eXIf, tEXt, zTXt, iTXt, tIME and any ancillary
  chunk that is not a known rendering chunk; data after IEND is refused.
- Video: the container is remuxed packet by packet (nothing decoded or re-encoded) into a new WebM or
  MP4 written without container or stream metadata (no location, creation time, make or model; the
  muxer's bitexact mode also leaves out its version), keeping only audio and video streams: timed
  metadata tracks (per-frame GPS on phones), subtitles, attachments and cover art are dropped.
- PDF: checked but passed through unchanged, so document metadata (author, producer, dates) is kept;
  this is a known limitation. Scripts, launch actions, attachments, rich media and XFA forms are refused;
  names hidden in Flate-compressed object streams are inflated and checked too.

Every kind is also checked for polyglots: bytes that would make the file readable as another type
(``_refuse_polyglot``). Pillow and PyAV parse untrusted input here; any exception they raise becomes
``ClipRejected``. These functions are CPU-bound (a large video takes a while): call them in a thread.
"""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av
from PIL import Image

MAX_BYTES = {"image": 15 * 1024 * 1024, "video": 100 * 1024 * 1024, "document": 20 * 1024 * 1024}
ACCEPTED = "JPEG or PNG photos, WebM or MP4 videos, PDF documents"
MAX_VIDEO_SECONDS = 5 * 60

_KIND = {
    "image/jpeg": "image",
    "image/png": "image",
    "video/webm": "video",
    "video/mp4": "video",
    "application/pdf": "document",
}
_EXTENSION = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "video/webm": "webm",
    "video/mp4": "mp4",
    "application/pdf": "pdf",
}
_LABEL = {
    "image/jpeg": "a JPEG photo",
    "image/png": "a PNG image",
    "video/webm": "a WebM video",
    "video/mp4": "an MP4 video",
    "application/pdf": "a PDF document",
}
_KIND_PLURAL = {"image": "photos", "video": "videos", "document": "documents"}


class ClipRejected(Exception):
    """The file is refused; str(exc) is a clear message for the visitor (what was wrong, what is accepted)."""


@dataclass(frozen=True)
class CleanClip:
    """An accepted clip: its type as found from its content, and the bytes to store."""

    kind: str  # "image" | "video" | "document"
    media_type: str  # "image/jpeg", "image/png", "video/webm", "video/mp4", "application/pdf"
    extension: str  # "jpg", "png", "webm", "mp4", "pdf"
    data: bytes  # what is stored: the file with location/device metadata removed
    removed: tuple[str, ...]  # what was stripped, for logs/tests, e.g. ("exif", "xmp"), ("container metadata",)


# ISO BMFF brands of still images (HEIC/AVIF photos, JPEG 2000, Canon raw): an ftyp box alone is not a video.
_IMAGE_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"}
_IMAGE_BRANDS |= {b"jp2 ", b"jpx ", b"jpm ", b"crx "}


def sniff(head: bytes) -> str | None:
    """The media type the first bytes (magic numbers) announce, None when unknown or not accepted."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML header: Matroska and its WebM profile
        return "video/webm"
    if head[4:8] == b"ftyp" and len(head) >= 12 and head[8:12] not in _IMAGE_BRANDS:
        return "video/mp4"
    if re.match(rb"%PDF-[12]\.\d", head):
        return "application/pdf"
    return None


def clean(data: bytes, *, declared_type: str | None = None) -> CleanClip:
    """Check ``data`` by its content and return what to store; raise ClipRejected with the reason otherwise."""
    if not data:
        raise ClipRejected(f"this file is empty. Accepted are {ACCEPTED}.")
    media_type = sniff(data[:16])
    declared = _normalise(declared_type)
    if media_type is None:
        what = _foreign(data) or "not a file type we accept"
        if declared is not None and _family(declared) is not None:
            raise ClipRejected(
                f"this file says it is {_declared_label(declared)} but it is {what}: refused. Accepted are {ACCEPTED}."
            )
        raise ClipRejected(f"this file is {what}: refused. Accepted are {ACCEPTED}.")
    kind = _KIND[media_type]
    if declared is not None and _family(declared) not in (None, kind):
        raise ClipRejected(
            f"this file says it is {_declared_label(declared)} but it is {_LABEL[media_type]}: "
            "refused. Send it with its real type."
        )
    limit = MAX_BYTES[kind]
    if len(data) > limit:
        raise ClipRejected(
            f"this file is {len(data) / 2**20:.1f} MB; {_KIND_PLURAL[kind]} up to {limit / 2**20:g} MB are accepted."
        )
    _refuse_polyglot(data, media_type)
    if media_type == "image/jpeg":
        stored, removed = _clean_jpeg(data)
    elif media_type == "image/png":
        stored, removed = _clean_png(data)
    elif kind == "video":
        stored, removed = _clean_video(data, media_type)
    else:
        stored, removed = _check_pdf(data), ()
    if stored is not data:
        _refuse_polyglot(stored, media_type)
    return CleanClip(kind, media_type, _EXTENSION[media_type], stored, removed)


def _normalise(declared_type: str | None) -> str | None:
    if declared_type is None:
        return None
    value = declared_type.split(";", 1)[0].strip().lower()
    return value or None


def _family(declared: str) -> str | None:
    """The kind a declared type claims; None for types that claim nothing (application/octet-stream)."""
    if declared.startswith("image/"):
        return "image"
    if declared.startswith(("video/", "audio/")) or declared == "application/mp4":
        return "video"
    if declared in ("application/pdf", "application/x-pdf"):
        return "document"
    return None


def _declared_label(declared: str) -> str:
    return f"{_LABEL[declared]} ({declared})" if declared in _LABEL else declared


# --- polyglots ---------------------------------------------------------------------------------------------------

_HTML = re.compile(rb"<(?:html|!doctype\s+html|head|body|script|svg|iframe)\b|<\?php", re.IGNORECASE)
# ZIP readers look for the end-of-central-directory record in the last 64 KiB (+22 bytes) of a file.
_ZIP_EOCD_WINDOW = 65535 + 22
# PDF readers accept the header anywhere in the first KiB; browsers sniff HTML in the first 512 bytes.
_HEAD_WINDOW = 1024


def _foreign(part: bytes) -> str | None:
    """What ``part`` is by its first bytes (after blank padding), when it has a known signature."""
    part = part[:4096].lstrip(b"\x00\t\n\r\x0c ")
    signatures: tuple[tuple[bytes, str], ...] = (
        (b"PK\x03\x04", "a ZIP archive"),
        (b"PK\x05\x06", "a ZIP archive"),
        (b"PK\x07\x08", "a ZIP archive"),
        (b"Rar!\x1a\x07", "a RAR archive"),
        (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
        (b"\x1f\x8b", "a gzip archive"),
        (b"%PDF-", "a PDF document"),
        (b"MZ", "a Windows program"),
        (b"\x7fELF", "a Linux program"),
        (b"\xcf\xfa\xed\xfe", "a macOS program"),
        (b"\xca\xfe\xba\xbe", "a macOS or Java program"),
        (b"#!", "a script"),
        (b"\xff\xd8\xff", "a JPEG photo"),
        (b"\x89PNG", "a PNG image"),
        (b"GIF8", "a GIF image"),
        (b"\x1a\x45\xdf\xa3", "a Matroska/WebM video"),
        (b"RIFF", "a RIFF file (WebP, AVI or WAV)"),
    )
    for signature, what in signatures:
        if part.startswith(signature):
            return what
    if part[4:8] == b"ftyp":
        return "an HEIC/AVIF photo" if part[8:12] in _IMAGE_BRANDS else "an MP4/QuickTime file"
    if _HTML.match(part) or part[:5].lower() == b"<?xml":
        return "a PHP script" if part[:5].lower() == b"<?php" else "an HTML or XML page"
    return None


def _refuse_polyglot(data: bytes, media_type: str) -> None:
    """Refuse bytes that would let another reader (ZIP, PDF, browser, PHP) take the file for its own type."""
    what: str | None = None
    head = data[:_HEAD_WINDOW]
    if media_type != "application/pdf" and b"%PDF-" in head:
        what = "a PDF document"
    elif b"PK\x05\x06" in data[-_ZIP_EOCD_WINDOW:]:
        what = "a ZIP archive"
    elif (found := _HTML.search(head)) is not None:
        what = "a PHP script" if found.group().lower() == b"<?php" else "an HTML page"
    elif b"<?php" in data or b"<?PHP" in data:  # PHP runs a file's code wherever the tag is
        what = "a PHP script"
    elif b"<script" in data.lower():  # 7 bytes: never there by chance, even in 100 MB of compressed data
        what = "an HTML page"
    if what is not None:
        _refuse_also(what)


def _refuse_also(what: str) -> None:
    raise ClipRejected(f"this file is also something else ({what}): refused. Accepted are {ACCEPTED}.")


def _refuse_trailing(rest: bytes, name: str) -> None:
    what = _foreign(rest)
    if what is not None:
        _refuse_also(what)
    raise ClipRejected(f"this {name} has extra data after its end: refused. Save it again and resend it.")


# --- JPEG --------------------------------------------------------------------------------------------------------

_DAMAGED_JPEG = "this JPEG photo is damaged or incomplete: refused. Save it again and resend it."
_PADDING = b"\x00\xff\t\n\r "
_MAX_PADDING = 4096
_ORIENTATION = 0x0112


@dataclass
class _JpegWalk:
    end: int  # offset just after EOI
    kept: list[bytes]
    removed: list[str]
    exif: bytes | None  # the first APP1 Exif payload


def _walk_jpeg(data: bytes, start: int) -> _JpegWalk:
    """Split the JPEG at ``start`` into marker segments (ITU T.81 B.1), keeping only decoding ones."""
    n = len(data)
    walk = _JpegWalk(end=0, kept=[b"\xff\xd8"], removed=[], exif=None)
    pos = start + 2
    while True:
        if pos >= n or data[pos] != 0xFF:
            raise ClipRejected(_DAMAGED_JPEG)
        while pos < n and data[pos] == 0xFF:  # a marker may be preceded by any number of 0xFF fill bytes
            pos += 1
        if pos >= n:
            raise ClipRejected(_DAMAGED_JPEG)
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI
            walk.kept.append(b"\xff\xd9")
            walk.end = pos
            return walk
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # RSTn, TEM: no length
            walk.kept.append(bytes((0xFF, marker)))
            continue
        if marker in (0x00, 0xD8) or pos + 2 > n:
            raise ClipRejected(_DAMAGED_JPEG)
        length = int.from_bytes(data[pos : pos + 2], "big")
        if length < 2 or pos + length > n:
            raise ClipRejected(_DAMAGED_JPEG)
        payload = data[pos + 2 : pos + length]
        segment = b"\xff" + bytes((marker,)) + data[pos : pos + length]
        pos += length
        if 0xE0 <= marker <= 0xEF or marker == 0xFE:
            _sort_jpeg_metadata(walk, marker, payload, segment)
            continue
        walk.kept.append(segment)
        if marker == 0xDA:  # SOS: entropy-coded data follows, up to the next marker that is not RSTn
            ecs_start = pos
            while True:
                ff = data.find(b"\xff", pos)
                if ff < 0 or ff + 1 >= n:
                    raise ClipRejected(_DAMAGED_JPEG)
                following = data[ff + 1]
                if following == 0x00 or 0xD0 <= following <= 0xD7:  # stuffed byte or restart marker
                    pos = ff + 2
                elif following == 0xFF:
                    pos = ff + 1
                else:
                    walk.kept.append(data[ecs_start:ff])
                    pos = ff
                    break


def _sort_jpeg_metadata(walk: _JpegWalk, marker: int, payload: bytes, segment: bytes) -> None:
    if marker == 0xE0 and payload.startswith(b"JFIF\x00") and len(payload) >= 14:
        if len(payload) > 14:  # cut the thumbnail: set its size to 0x0 (JFIF 1.02 section "APP0 marker")
            segment = b"\xff\xe0\x00\x10" + payload[:12] + b"\x00\x00"
            walk.removed.append("jfif thumbnail")
        walk.kept.append(segment)
    elif marker == 0xEE and payload.startswith(b"Adobe"):
        walk.kept.append(segment)
    elif marker == 0xE1 and payload.startswith(b"Exif\x00"):
        walk.removed.append("exif")
        if walk.exif is None:
            walk.exif = payload
    elif marker == 0xE1 and payload.startswith((b"http://ns.adobe.com/xap/", b"http://ns.adobe.com/xmp/")):
        walk.removed.append("xmp")
    elif marker == 0xE2 and payload.startswith(b"ICC_PROFILE\x00"):
        walk.removed.append("icc profile")
    elif marker == 0xE2 and payload.startswith(b"MPF\x00"):
        walk.removed.append("mpf")
    elif marker == 0xED:
        walk.removed.append("iptc")
    elif marker == 0xFE:
        walk.removed.append("comment")
    else:
        walk.removed.append(f"app{marker - 0xE0}")


def _orientation(exif_payload: bytes | None) -> int:
    """The Orientation in IFD0 of an APP1 Exif payload (TIFF 6.0 section 2), 1 when absent or unreadable.

    Read by hand: it is one SHORT entry, and Pillow's EXIF reader warns through the (thread-unsafe)
    warnings machinery on damaged input.
    """
    if exif_payload is None:
        return 1
    tiff = exif_payload[6:]
    order: Literal["little", "big"] = "little" if tiff[:2] == b"II" else "big"
    if tiff[:2] not in (b"II", b"MM") or int.from_bytes(tiff[2:4], order) != 42:
        return 1
    ifd = int.from_bytes(tiff[4:8], order)
    entries = int.from_bytes(tiff[ifd : ifd + 2], order)
    for index in range(entries):
        entry = tiff[ifd + 2 + 12 * index : ifd + 14 + 12 * index]
        if len(entry) < 12:
            break
        if int.from_bytes(entry[0:2], order) == _ORIENTATION and int.from_bytes(entry[2:4], order) == 3:
            value = int.from_bytes(entry[8:10], order)
            return value if 1 <= value <= 8 else 1
    return 1


def _clean_jpeg(data: bytes) -> tuple[bytes, tuple[str, ...]]:
    walk = _walk_jpeg(data, 0)
    removed = walk.removed
    pos = walk.end
    while pos < len(data):  # what follows EOI: padding, appended multi-picture images, or refused
        rest = data[pos:]
        stripped = rest.lstrip(_PADDING)
        if stripped.startswith(b"\xd8\xff") and rest.endswith(b"\xff" + stripped):  # the padding ate its 0xFF
            stripped = b"\xff" + stripped
        if not stripped:
            if len(rest) > _MAX_PADDING:
                _refuse_trailing(rest, "JPEG photo")
            break
        if not stripped.startswith(b"\xff\xd8\xff") or len(rest) - len(stripped) > _MAX_PADDING:
            _refuse_trailing(stripped, "JPEG photo")
        pos = _walk_jpeg(data, pos + len(rest) - len(stripped)).end
        removed.append("appended images")
    segments = walk.kept
    orientation = _orientation(walk.exif)
    if orientation != 1:
        exif = Image.Exif()
        exif[_ORIENTATION] = orientation
        payload = exif.tobytes()
        at = 2 if segments[1].startswith(b"\xff\xe0") else 1  # after SOI, and APP0 JFIF when present
        segments.insert(at, b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload)
    cleaned = b"".join(segments)
    _check_with_pillow(cleaned, "JPEG")
    return cleaned, _unique(removed)


# --- PNG ---------------------------------------------------------------------------------------------------------

_DAMAGED_PNG = "this PNG image is damaged or incomplete: refused. Save it again and resend it."
# Ancillary chunks that change how the image renders (PNG 3rd edition, APNG); every other ancillary chunk goes.
_PNG_RENDERING = {b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT", b"bKGD", b"pHYs", b"hIST", b"sPLT"}
_PNG_RENDERING |= {b"cICP", b"mDCV", b"cLLI", b"mDCv", b"cLLi", b"acTL", b"fcTL", b"fdAT"}
_PNG_CRITICAL = {b"IHDR", b"PLTE", b"IDAT", b"IEND"}
_PNG_LABELS = {b"eXIf": "exif", b"tEXt": "text", b"zTXt": "text", b"iTXt": "text", b"tIME": "time"}


def _clean_png(data: bytes) -> tuple[bytes, tuple[str, ...]]:
    """Copy the PNG's chunks (PNG spec section 5.3) whole, dropping metadata ones."""
    kept = [data[:8]]
    removed: list[str] = []
    pos, n = 8, len(data)
    while True:
        if pos + 12 > n:
            raise ClipRejected(_DAMAGED_PNG)
        length = int.from_bytes(data[pos : pos + 4], "big")
        chunk_type = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if length > 2**31 - 1 or end > n or not chunk_type.isalpha() or (pos == 8) != (chunk_type == b"IHDR"):
            raise ClipRejected(_DAMAGED_PNG)
        if zlib.crc32(data[pos + 4 : end - 4]) != int.from_bytes(data[end - 4 : end], "big"):
            raise ClipRejected(_DAMAGED_PNG)
        if chunk_type in _PNG_CRITICAL or chunk_type in _PNG_RENDERING:
            kept.append(data[pos:end])
        elif chunk_type[0:1].isupper():  # an unknown critical chunk: no decoder can show this image
            raise ClipRejected(_DAMAGED_PNG)
        elif chunk_type == b"iTXt" and data[pos + 8 : end - 4].startswith(b"XML:com.adobe.xmp\x00"):
            removed.append("xmp")
        else:
            removed.append(_PNG_LABELS.get(chunk_type, f"chunk {chunk_type.decode('ascii')}"))
        pos = end
        if chunk_type == b"IEND":
            break
    if pos < n:
        _refuse_trailing(data[pos:], "PNG image")
    cleaned = b"".join(kept)
    _check_with_pillow(cleaned, "PNG")
    return cleaned, _unique(removed)


_MAX_PIXELS = 80_000_000  # below Pillow's own decompression-bomb limit; 64 MP phone photos pass


def _check_with_pillow(data: bytes, image_format: str) -> None:
    """Refuse an image Pillow cannot decode whole, or one too large to decode safely."""
    damaged = f"this {image_format} image is damaged or cannot be read: refused. Save it again and resend it."
    try:
        with Image.open(io.BytesIO(data), formats=[image_format]) as image:
            width, height = image.size
            if width * height > _MAX_PIXELS:  # decoding would take gigabytes: a decompression bomb
                raise ClipRejected(
                    f"this image is {width}x{height} pixels; images up to {_MAX_PIXELS // 10**6} megapixels are "
                    "accepted."
                )
            image.load()
    except ClipRejected:
        raise
    except Exception:  # Pillow raises OSError, SyntaxError, ValueError, struct.error... on damaged input
        raise ClipRejected(damaged) from None


def _unique(labels: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(labels))


# --- video -------------------------------------------------------------------------------------------------------

_WEBM_CODECS = {"vp8", "vp9", "av1", "opus", "vorbis"}


def _clean_video(data: bytes, media_type: str) -> tuple[bytes, tuple[str, ...]]:
    """Remux audio and video packets into a new container without any metadata."""
    webm = media_type == "video/webm"
    damaged = f"this video is damaged or cannot be read: refused. Accepted are {ACCEPTED}."
    try:
        # The demuxer is forced: probing could pick a playlist format that opens other files or URLs.
        source = av.open(io.BytesIO(data), "r", format="matroska" if webm else "mov")
    except Exception:  # PyAV raises FFmpegError subclasses, ValueError, OSError... on damaged input
        raise ClipRejected(damaged) from None
    removed: list[str] = []
    output = io.BytesIO()
    try:
        with source:
            if source.metadata:
                removed.append("container metadata")
            if source.duration is not None:
                _check_duration(Fraction(source.duration, av.time_base))
            streams = []
            for stream in source.streams:
                if stream.type in ("video", "audio") and not stream.disposition & av.stream.Disposition.attached_pic:
                    streams.append(stream)
                    if stream.metadata:
                        removed.append("stream metadata")
                else:
                    removed.append(f"{stream.type} stream")
            if not streams:
                raise ClipRejected(f"this video has neither picture nor sound: refused. Accepted are {ACCEPTED}.")
            names = {stream.codec_context.name for stream in streams}
            if webm and not names <= _WEBM_CODECS:
                raise ClipRejected(
                    f"this WebM/Matroska video uses {', '.join(sorted(names - _WEBM_CODECS))}, which WebM does "
                    "not allow: refused. WebM videos use VP8, VP9 or AV1 with Opus or Vorbis sound; MP4 is "
                    "accepted too."
                )
            _remux(source, streams, output, "webm" if webm else "mp4")
    except ClipRejected:
        raise
    except Exception:
        raise ClipRejected(damaged) from None
    return output.getvalue(), _unique(removed)


def _remux(source: av.container.InputContainer, streams: list[av.stream.Stream], output: io.BytesIO, fmt: str) -> None:
    # bitexact: the muxer writes no "encoder" version tag (and MP4 no creation time without metadata).
    with av.open(output, "w", format=fmt, options={"fflags": "+bitexact"}) as sink:
        mapping = {}
        first_pts: dict[int, int] = {}
        muxed = 0
        for stream in streams:
            try:
                copy = sink.add_stream_from_template(stream)
            except ValueError:  # the container cannot hold this codec (PCM or ProRes in MP4, say)
                raise ClipRejected(
                    f"this video's {stream.type} is {stream.codec_context.name}, which {fmt.upper()} cannot hold: "
                    f"refused. Accepted are {ACCEPTED}."
                ) from None
            if fmt == "mp4" and stream.codec_context.name == "hevc" and stream.codec_context.codec_tag == "hvc1":
                copy.codec_context.codec_tag = "hvc1"  # Safari plays HEVC in MP4 only under this tag
            mapping[stream.index] = copy
        for packet in source.demux(streams):
            if packet.dts is None:  # the demuxer's end-of-stream packets
                continue
            if packet.pts is not None and packet.time_base is not None:  # a header's duration may lie
                first = first_pts.setdefault(packet.stream.index, packet.pts)
                _check_duration((packet.pts - first) * packet.time_base)
            packet.stream = mapping[packet.stream.index]
            sink.mux(packet)
            muxed += 1
    if not muxed:
        raise ClipRejected(f"this video has no picture or sound in it: refused. Accepted are {ACCEPTED}.")


def _check_duration(seconds: Fraction) -> None:
    if seconds > MAX_VIDEO_SECONDS:
        minutes, rest = divmod(int(seconds), 60)
        raise ClipRejected(
            f"this video lasts {minutes} min {rest} s or more; videos up to {MAX_VIDEO_SECONDS // 60} minutes "
            "are accepted."
        )


# --- PDF ---------------------------------------------------------------------------------------------------------

# Names that make a PDF run code or carry files (ISO 32000-1 12.6.4.8 Launch, 12.6.4.16 JavaScript,
# 7.11.4 embedded files, 12.7.8 XFA forms, and Adobe's RichMedia annotations).
_PDF_REFUSED = {b"JavaScript", b"JS", b"Launch", b"EmbeddedFile", b"EmbeddedFiles", b"RichMedia", b"XFA"}
_PDF_NAME = re.compile(rb"/([^\x00\t\n\x0c\r /%()<>\[\]{}]+)")
_PDF_STREAM = re.compile(rb"(?<![A-Za-z])stream(?:\r\n|\n|\r)")
_PDF_HEX = re.compile(rb"#([0-9A-Fa-f]{2})")
_PDF_INFLATE_BUDGET = 64 * 1024 * 1024


def _pdf_names(text: bytes, *, short: bool = True) -> set[bytes]:
    """The refused names in ``text``, with #xx escapes decoded (7.3.5: /J#61vaScript is /JavaScript)."""
    found = set()
    for match in _PDF_NAME.finditer(text):
        name = _PDF_HEX.sub(lambda m: bytes((int(m.group(1), 16),)), match.group(1))
        if name in _PDF_REFUSED and (short or len(name) > 3):
            found.add(name)
    return found


def _check_pdf(data: bytes) -> bytes:
    """Refuse PDFs with scripts or attachments; the file itself is returned unchanged."""
    tail = data[-1024:]
    eof = tail.rfind(b"%%EOF")
    if eof < 0:
        raise ClipRejected(
            "this PDF document is incomplete (it has no end marker): refused. Save it again and resend it."
        )
    after = tail[eof + 5 :]
    if _foreign(after) is not None:
        _refuse_trailing(after, "PDF document")
    # Names outside streams are checked in full. Inside stream data (binary) only the long names are
    # looked for, as /JS occurs there by chance; a JavaScript action also always names /JavaScript.
    found = _pdf_names(data, short=False)
    outside: list[bytes] = []
    pos = 0
    budget = _PDF_INFLATE_BUDGET
    encrypted = b"/Encrypt" in data  # the trailer's /Encrypt entry (7.6.1)
    for match in _PDF_STREAM.finditer(data):
        if match.start() < pos:
            continue
        outside.append(data[pos : match.start()])
        end = data.find(b"endstream", match.end())
        end = len(data) if end < 0 else end
        dictionary = data[max(pos, match.start() - 4096) : match.start()]
        header = dictionary.rfind(b"obj")
        dictionary = dictionary[header + 3 :] if header >= 0 else dictionary
        names = {_PDF_HEX.sub(lambda m: bytes((int(m.group(1), 16),)), n) for n in _PDF_NAME.findall(dictionary)}
        if b"ObjStm" in names:  # object streams (7.5.7) hold compressed dictionaries: inflate and check them
            if encrypted:  # their content is encrypted too (7.6.2), so it cannot be read here
                raise ClipRejected(
                    "this PDF document is encrypted in a way that cannot be checked: refused. Print it to "
                    "a new PDF and resend it."
                )
            inflated, budget = _inflate_object_stream(data[match.end() : end], names, budget)
            found |= _pdf_names(inflated)
        pos = end
    outside.append(data[pos:])
    found |= _pdf_names(b" ".join(outside))
    if found:
        listed = ", ".join("/" + name.decode("latin-1") for name in sorted(found))
        raise ClipRejected(
            f"this PDF document contains scripts or attachments ({listed}), which are not accepted: "
            "refused. Print it to a new PDF and resend it."
        )
    return data


def _inflate_object_stream(raw: bytes, names: set[bytes], budget: int) -> tuple[bytes, int]:
    uncheckable = ClipRejected(
        "this PDF document is compressed in a way that cannot be checked: refused. Print it to a new PDF and resend it."
    )
    filters = names & {
        b"FlateDecode",
        b"Fl",
        b"LZWDecode",
        b"ASCIIHexDecode",
        b"ASCII85Decode",
        b"RunLengthDecode",
        b"Crypt",
        b"DecodeParms",
        b"LZW",
        b"AHx",
        b"A85",
        b"RL",
    }
    if not filters:
        return raw, budget
    if filters - {b"FlateDecode", b"Fl"}:
        raise uncheckable
    inflater = zlib.decompressobj()
    try:
        inflated = inflater.decompress(raw, budget + 1)
    except zlib.error:
        raise uncheckable from None
    if len(inflated) > budget:
        raise uncheckable
    return inflated, budget - len(inflated)
