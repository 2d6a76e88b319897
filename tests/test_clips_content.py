"""Clips: content sniffing, metadata stripping and refusals, on files made here with Pillow and PyAV."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from fractions import Fraction

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from media import clips
from media.clips import ClipRejected, clean, sniff

GPS_IFD, EXIF_IFD = 0x8825, 0x8769
MAKE, MODEL, ORIENTATION, BODY_SERIAL = 0x010F, 0x0110, 0x0112, 0xA431
LOCATION = "+51.5074-000.1278/"
PRIVATE_VALUES = (b"51.5074", b"secret", b"Canon", b"EOS 5D", b"SN123456", b"2024:01:01")


def picture() -> Image.Image:
    """A small RGB picture with real detail (gradients and noise), so that compression has work to do."""
    gradient = Image.radial_gradient("L").resize((64, 48))
    noise = Image.effect_noise((64, 48), 40)
    return Image.merge("RGB", (gradient, noise, Image.linear_gradient("L").resize((64, 48))))


def make_jpeg(orientation: int | None = 6) -> bytes:
    exif = Image.Exif()
    exif[MAKE] = "Canon"
    exif[MODEL] = "EOS 5D"
    exif[0x0132] = "2024:01:01 10:00:00"
    if orientation is not None:
        exif[ORIENTATION] = orientation
    exif[GPS_IFD] = {1: "N", 2: (51.0, 30.0, 26.0), 3: "W", 4: (0.0, 7.0, 40.0)}
    exif.get_ifd(EXIF_IFD)[BODY_SERIAL] = "SN123456"
    out = io.BytesIO()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>secret place</rdf:RDF></x:xmpmeta>'
    picture().save(out, "JPEG", exif=exif, xmp=xmp, comment=b"secret comment", quality=90)
    return out.getvalue()


def make_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "secret author")
    info.add_text("Comment", "secret compressed " * 20, zip=True)
    info.add_itxt("Description", "secret international", lang="en")
    info.add(b"prVt", b"secret private chunk")
    exif = Image.Exif()
    exif[MAKE] = "Canon"
    out = io.BytesIO()
    picture().save(out, "PNG", pnginfo=info, exif=exif)
    return out.getvalue()


def make_pdf(extra: bytes = b"") -> bytes:
    out = io.BytesIO()
    picture().save(out, "PDF")
    data = out.getvalue()
    return data.replace(b"/Type /Catalog", b"/Type /Catalog" + extra, 1)


def make_video(fmt: str, vcodec: str, acodec: str | None, *, frames: int = 25, rate: int = 25) -> bytes:
    """A short video with location, title and device metadata on the container and its streams."""
    out = io.BytesIO()
    options = {"movflags": "use_metadata_tags"} if fmt == "mp4" else {}
    with av.open(out, "w", format=fmt, options=options) as container:
        container.metadata.update(
            {
                "location": LOCATION,
                "com.apple.quicktime.location.ISO6709": LOCATION,
                "title": "secret",
                "make": "Canon",
                "model": "EOS 5D",
                "creation_time": "2024-01-01T10:00:00Z",
            }
        )
        video = container.add_stream(vcodec, rate=rate)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        video.metadata["title"] = "secret camera"
        audio = container.add_stream(acodec, rate=48000, layout="mono") if acodec else None
        if audio is not None:
            audio.metadata["title"] = "secret microphone"
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), index * 9 % 256, np.uint8), format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, rate)
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            size = audio.frame_size or 1024
            dtype = np.int16 if audio.format.name.startswith("s16") else np.float32
            for start in range(0, 48000 * frames // rate, size):
                samples = av.AudioFrame.from_ndarray(
                    np.zeros((1, size), dtype), format=audio.format.name, layout="mono"
                )
                samples.sample_rate = 48000
                samples.pts = start
                container.mux(audio.encode(samples))
            container.mux(audio.encode(None))
    return out.getvalue()


def video_facts(data: bytes) -> tuple[dict[str, str], list[dict[str, str]], float, int]:
    with av.open(io.BytesIO(data)) as container:
        assert container.duration is not None
        streams = [dict(stream.metadata) for stream in container.streams]
        duration = container.duration / av.time_base
        packets = sum(1 for packet in container.demux(container.streams.video[0]) if packet.size)
        return dict(container.metadata), streams, duration, packets


def assert_no_private_metadata(metadata: dict[str, str]) -> None:
    keys = {key.lower() for key in metadata}
    assert not keys & {"location", "com.apple.quicktime.location.iso6709", "creation_time", "make", "model", "title"}
    assert metadata.get("encoder", "Lavf") == "Lavf"  # at most the muxer's own name, without a version
    assert not any("secret" in value or "51.5074" in value for value in metadata.values())


def refusal(data: bytes, declared_type: str | None = None) -> str:
    with pytest.raises(ClipRejected) as caught:
        clean(data, declared_type=declared_type)
    return str(caught.value)


@pytest.fixture(scope="module")
def webm() -> bytes:
    return make_video("webm", "libvpx", "libopus")


@pytest.fixture(scope="module")
def mp4() -> bytes:
    return make_video("mp4", "libx264" if "libx264" in av.codecs_available else "mpeg4", "aac")


def test_sniff_by_magic_numbers() -> None:
    assert sniff(make_jpeg()[:16]) == "image/jpeg"
    assert sniff(make_png()[:16]) == "image/png"
    assert sniff(make_pdf()[:16]) == "application/pdf"
    assert sniff(b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01") == "video/webm"
    assert sniff(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00") == "video/mp4"
    assert sniff(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00") is None  # an iPhone photo, not a video
    assert sniff(b"GIF89a") is None
    assert sniff(b"") is None


def test_jpeg_loses_location_and_device_but_keeps_pixels_and_orientation() -> None:
    original = make_jpeg(orientation=6)
    assert all(value in original for value in (b"SN123456", b"secret place", b"secret comment"))

    clip = clean(original, declared_type="image/jpeg")

    assert (clip.kind, clip.media_type, clip.extension) == ("image", "image/jpeg", "jpg")
    assert {"exif", "xmp", "comment"} <= set(clip.removed)
    assert not any(value in clip.data for value in (*PRIVATE_VALUES, b"secret place", b"ns.adobe.com"))
    with Image.open(io.BytesIO(clip.data)) as cleaned, Image.open(io.BytesIO(original)) as before:
        exif = cleaned.getexif()
        assert dict(exif) == {ORIENTATION: 6}
        assert not exif.get_ifd(GPS_IFD) and not exif.get_ifd(EXIF_IFD)
        assert cleaned.info.get("comment") is None and "xmp" not in cleaned.info
        assert cleaned.tobytes() == before.tobytes()
    assert clean(clip.data).data == clip.data  # cleaning is idempotent


def test_upright_jpeg_keeps_no_exif_at_all() -> None:
    clip = clean(make_jpeg(orientation=1))
    assert b"Exif" not in clip.data
    with Image.open(io.BytesIO(clip.data)) as cleaned:
        assert not cleaned.getexif()


def test_png_loses_text_exif_and_private_chunks_but_keeps_pixels() -> None:
    original = make_png()
    for chunk in (b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"prVt"):
        assert chunk in original

    clip = clean(original, declared_type="image/png; charset=binary")

    assert (clip.kind, clip.media_type, clip.extension) == ("image", "image/png", "png")
    assert set(clip.removed) == {"text", "exif", "chunk prVt"}
    for chunk in (b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"prVt", b"secret", b"Canon"):
        assert chunk not in clip.data
    with Image.open(io.BytesIO(clip.data)) as cleaned, Image.open(io.BytesIO(original)) as before:
        assert cleaned.tobytes() == before.tobytes()
        assert not cleaned.getexif() and not cleaned.text


def test_webm_is_remuxed_without_metadata(webm: bytes) -> None:
    metadata, stream_metadata, duration, packets = video_facts(webm)
    assert metadata["LOCATION"] == LOCATION and b"secret" in webm

    clip = clean(webm, declared_type="video/webm")

    assert (clip.kind, clip.media_type, clip.extension) == ("video", "video/webm", "webm")
    assert "container metadata" in clip.removed
    assert not any(value in clip.data for value in PRIVATE_VALUES)
    cleaned_metadata, cleaned_streams, cleaned_duration, cleaned_packets = video_facts(clip.data)
    assert_no_private_metadata(cleaned_metadata)
    for stream in cleaned_streams:
        assert_no_private_metadata(stream)
    assert len(cleaned_streams) == len(stream_metadata) == 2
    assert cleaned_packets == packets == 25
    assert cleaned_duration == pytest.approx(duration, abs=0.01)


def test_mp4_is_remuxed_without_location(mp4: bytes) -> None:
    metadata, _, duration, packets = video_facts(mp4)
    assert metadata["location"] == LOCATION and b"51.5074" in mp4

    clip = clean(mp4, declared_type="video/quicktime")

    assert (clip.kind, clip.media_type, clip.extension) == ("video", "video/mp4", "mp4")
    assert not any(value in clip.data for value in PRIVATE_VALUES)
    cleaned_metadata, cleaned_streams, cleaned_duration, cleaned_packets = video_facts(clip.data)
    assert_no_private_metadata(cleaned_metadata)
    for stream in cleaned_streams:
        assert_no_private_metadata(stream)
    assert cleaned_packets == packets == 25
    assert cleaned_duration == pytest.approx(duration, abs=0.05)


def test_portrait_phone_video_stays_rotated(mp4: bytes) -> None:
    """Phones record portrait video as landscape frames plus a display matrix in the track header."""
    data = bytearray(mp4)
    matrix = data.index(b"tkhd") + 4 + 4 + 5 * 4 + 8 + 8  # tkhd version 0: after times, id, duration, layer...
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)  # 90 degrees

    clip = clean(bytes(data))

    with av.open(io.BytesIO(clip.data)) as container:
        first = next(container.decode(container.streams.video[0]))
        assert first.rotation == -90


def test_video_over_five_minutes_is_refused() -> None:
    long_video = make_video("webm", "libvpx", None, frames=302, rate=1)
    assert "videos up to 5 minutes" in refusal(long_video)


def test_pdf_is_passed_through() -> None:
    document = make_pdf()
    clip = clean(document, declared_type="application/pdf")
    assert (clip.kind, clip.media_type, clip.extension, clip.data, clip.removed) == (
        "document",
        "application/pdf",
        "pdf",
        document,
        (),
    )


@pytest.mark.parametrize(
    "extra",
    [
        b" /OpenAction << /S /JavaScript /JS (app.alert(1)) >>",
        b" /OpenAction << /S /J#61vaScript /J#53 (app.alert(1)) >>",  # names may be written with #xx escapes
        b" /OpenAction << /S /Launch /F (calc.exe) >>",
        b" /Names << /EmbeddedFiles 9 0 R >>",
    ],
)
def test_pdf_with_scripts_or_attachments_is_refused(extra: bytes) -> None:
    message = refusal(make_pdf(extra))
    assert "scripts or attachments" in message and "not accepted" in message


def test_pdf_script_hidden_in_a_compressed_object_stream_is_refused() -> None:
    objects = zlib.compress(b"10 0 << /S /JavaScript /JS (app.alert(1)) >>")
    hidden = (
        b"9 0 obj << /Type /ObjStm /N 1 /First 5 /Filter /FlateDecode /Length %d >>\nstream\n%b\nendstream\nendobj\n"
        % (len(objects), objects)
    )
    document = make_pdf()
    at = document.rindex(b"xref")
    assert "/JavaScript" in refusal(document[:at] + hidden + document[at:])


def test_encrypted_pdf_with_object_streams_is_refused() -> None:
    header = b"9 0 obj << /Type /ObjStm /N 1 /First 5 /Filter /FlateDecode /Length 4 >>\nstream\n"
    hidden = header + b"\x8a\x13\xfe\x01\nendstream\nendobj\n"  # ciphertext: no inflating it
    document = make_pdf().replace(b"trailer\n<<", b"trailer\n<< /Encrypt 12 0 R", 1)
    at = document.rindex(b"xref")
    assert "encrypted in a way that cannot be checked" in refusal(document[:at] + hidden + document[at:])


def test_empty_unknown_and_oversized_files_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "empty" in refusal(b"")
    message = refusal(b"GIF89a\x01\x00\x01\x00" + bytes(40))
    assert "a GIF image" in message and clips.ACCEPTED in message
    assert "a Windows program" in refusal(b"MZ\x90\x00" + bytes(100), declared_type="image/png")
    assert clips.ACCEPTED in refusal(bytes(range(256)))

    monkeypatch.setitem(clips.MAX_BYTES, "image", 1024 * 1024)
    big = io.BytesIO()
    noise = [Image.effect_noise((1024, 1024), 128) for _ in range(3)]
    Image.merge("RGB", noise).save(big, "PNG")
    assert len(big.getvalue()) > 1024 * 1024
    assert "photos up to 1 MB are accepted" in refusal(big.getvalue())


def test_declared_type_of_another_family_is_refused() -> None:
    message = refusal(make_png(), declared_type="application/pdf")
    assert "says it is a PDF document (application/pdf) but it is a PNG image" in message
    message = refusal(make_pdf(), declared_type="image/jpeg")
    assert "says it is a JPEG photo (image/jpeg) but it is a PDF document" in message
    # Same family, or a type that claims nothing: the content decides.
    assert clean(make_png(), declared_type="image/jpeg").media_type == "image/png"
    assert clean(make_pdf(), declared_type="application/octet-stream").media_type == "application/pdf"


def test_jpeg_with_zip_appended_is_refused() -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("payload.class", b"\xca\xfe\xba\xbe" + bytes(64))
    polyglot = make_jpeg() + archive.getvalue()
    with zipfile.ZipFile(io.BytesIO(polyglot)) as readable:  # it really is a ZIP too
        assert readable.namelist() == ["payload.class"]
    assert "this file is also something else (a ZIP archive): refused" in refusal(polyglot)


def test_images_with_data_after_their_end_are_refused() -> None:
    assert "extra data after its end" in refusal(make_png() + b"hello")
    assert "also something else (a Windows program)" in refusal(make_png() + b"MZ\x90\x00" + bytes(64))
    assert "extra data after its end" in refusal(make_jpeg() + b"trailing bytes")
    assert clean(make_jpeg() + b"\x00\x00").media_type == "image/jpeg"  # a few padding bytes are fine


def test_html_in_a_photo_or_pdf_at_the_end_is_refused() -> None:
    assert "also something else (an HTML page)" in refusal(make_jpeg()[:-2] + b"<script>alert(1)</script>\xff\xd9")
    document = make_pdf() + b"\n<html><body>hi</body></html>"
    assert "also something else (an HTML or XML page)" in refusal(document)


def test_jpeg_followed_by_multi_picture_images_keeps_only_the_primary() -> None:
    primary = make_jpeg(orientation=None)
    clip = clean(primary + make_jpeg(orientation=None))
    assert "appended images" in clip.removed
    assert clean(primary).data == clip.data


# --- never anything but ClipRejected -----------------------------------------------------------------------------

_VALID: dict[str, bytes] = {}


def _valid(name: str) -> bytes:
    if name not in _VALID:
        makers = {
            "jpeg": make_jpeg,
            "png": make_png,
            "pdf": make_pdf,
            "webm": lambda: make_video("webm", "libvpx", "libopus", frames=5),
            "mp4": lambda: make_video("mp4", "mpeg4", "aac", frames=5),
        }
        _VALID[name] = makers[name]()
    return _VALID[name]


def _clean_or_refuse(data: bytes, declared_type: str | None = None) -> None:
    try:
        clip = clean(data, declared_type=declared_type)
    except ClipRejected as refused:
        assert str(refused)
    else:
        assert clip.data and clip.kind in clips.MAX_BYTES


MAGIC = [b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"%PDF-1.7\n", b"\x1a\x45\xdf\xa3", b"\x00\x00\x00\x18ftypisom"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(MAGIC), body=st.binary(max_size=600), declared=st.sampled_from([None, "image/png"]))
def test_arbitrary_bytes_are_only_ever_refused(prefix: bytes, body: bytes, declared: str | None) -> None:
    _clean_or_refuse(prefix + body, declared)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["jpeg", "png", "pdf", "webm", "mp4"]),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_mutated_files_are_only_ever_refused(name: str, edits: list[tuple[float, int]], cut: float | None) -> None:
    data = bytearray(_valid(name))
    for where, value in edits:
        data[int(where * len(data))] = value
    if cut is not None:
        data = data[: int(cut * len(data))]
    _clean_or_refuse(bytes(data))
