"""Which video container a file holds, from its first bytes: what the listing sniffs to find videos
whatever their names, and the media type the service answers with (never the name's extension,
which a hostile library can choose: a video named ``.html`` is still served as video)."""

from __future__ import annotations

SNIFF_BYTES = 512  # enough for every signature below (MPEG-TS needs three 188-byte packets)

_IMAGE_BRANDS = (b"heic", b"heix", b"mif1", b"msf1", b"avif")  # ISO-BMFF still images, not videos
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip")  # QuickTime files without ftyp
_SIGNATURES = (  # (leading bytes, media type)
    (b"OggS", "video/ogg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"FLV\x01", "video/x-flv"),
    (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "video/x-ms-asf"),  # ASF, WMV
    (b"\x00\x00\x01\xba", "video/mpeg"),  # MPEG program stream (VOB too)
    (b"\x00\x00\x01\xb3", "video/mpeg"),  # MPEG video elementary stream
    (b"\x06\x0e\x2b\x34\x02\x05\x01\x01", "application/mxf"),
    (b"nut/multimedia container", "video/x-nut"),
)


def media_type(head: bytes) -> str | None:
    """The media type of the video container whose first bytes (``SNIFF_BYTES`` of them) are
    ``head``, or None when they are not a video container FFmpeg reads."""
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _IMAGE_BRANDS:
            return None
        if brand == b"qt  ":
            return "video/quicktime"
        if brand.startswith(b"3g2"):
            return "video/3gpp2"
        return "video/3gpp" if brand.startswith(b"3g") else "video/mp4"
    if head[4:8] in _QUICKTIME_ATOMS:
        return "video/quicktime"
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: its DocType says WebM or Matroska
        return "video/webm" if b"\x42\x82\x84webm" in head[:64] else "video/x-matroska"
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "video/x-msvideo"
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    # MPEG transport stream: a sync byte every 188 bytes (M2TS: after a 4-byte timestamp).
    if any(len(head) > 2 * 188 + offset and head[offset::188][:3] == b"GGG" for offset in (0, 4)):
        return "video/mp2t"
    return None
