"""Damaged and oversized media, made on purpose: for the hostile-input and frame-bomb tests, and the bench.

- MP4s with the index in front ("faststart") cut part-way;
- MJPG AVIs with frames blanked out in the middle, or claiming huge frames;
- frame bombs: MJPEG AVIs assembled from any JPEGs, and valid JPEGs of any
  size that are small files (one flat grey, never held as pixels).
"""
from __future__ import annotations

import struct
from typing import Iterable, List, Optional, Sequence


# -- damaged media -------------------------------------------------------------------
def _atoms(data: bytes, start: int = 0, end: Optional[int] = None):
    end = len(data) if end is None else end
    position = start
    while position + 8 <= end:
        size, kind = struct.unpack(">I4s", data[position:position + 8])
        if size < 8:
            raise ValueError("unsupported MP4 atom size")
        yield kind, position, size
        position += size


_MP4_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"}


def _shift_chunk_offsets(moov: bytearray, start: int, end: int, delta: int) -> None:
    for kind, position, size in list(_atoms(moov, start, end)):
        if kind in _MP4_CONTAINERS:
            _shift_chunk_offsets(moov, position + 8, position + size, delta)
        elif kind == b"stco":
            (count,) = struct.unpack(">I", moov[position + 12:position + 16])
            for index in range(count):
                at = position + 16 + 4 * index
                (offset,) = struct.unpack(">I", moov[at:at + 4])
                struct.pack_into(">I", moov, at, offset + delta)
        elif kind == b"co64":
            raise ValueError("64-bit chunk offsets are not handled")


def faststart_mp4(source: str, target: str) -> int:
    """Copy an MP4 with its index (moov) moved in front of the frame data; returns the header's size.

    OpenCV's writer puts moov at the end, so cutting its files loses the
    index; a "faststart" file keeps a complete header when its frames are cut.
    """
    with open(source, "rb") as handle:
        data = handle.read()
    parts = {kind: data[position:position + size] for kind, position, size in _atoms(data)}
    moov = bytearray(parts[b"moov"])
    _shift_chunk_offsets(moov, 8, len(moov), len(moov))
    head = parts[b"ftyp"] + parts.get(b"free", b"") + bytes(moov)
    with open(target, "wb") as handle:
        handle.write(head + parts[b"mdat"])
    return len(head)


def cut_file(source: str, target: str, keep_bytes: int) -> str:
    with open(source, "rb") as handle:
        data = handle.read(keep_bytes)
    with open(target, "wb") as handle:
        handle.write(data)
    return target


def avi_frame_chunks(data: bytes) -> List[tuple]:
    """(offset, size) of every video frame chunk (`00dc`) in an AVI's movi list, in order."""
    position = data.find(b"movi") + 4
    chunks = []
    while position + 8 <= len(data):
        kind, size = data[position:position + 4], struct.unpack("<I", data[position + 4:position + 8])[0]
        if kind == b"idx1":
            break
        if kind == b"LIST":
            position += 12
            continue
        if kind.endswith(b"dc"):
            chunks.append((position, size))
        position += 8 + size + (size & 1)
    return chunks


def blank_avi_frames(source: str, target: str, frames: Iterable[int]) -> str:
    """Copy an MJPG AVI with the JPEG data of `frames` zeroed (headers and index intact).

    The file opens, its first and last frames decode, and the probe trusts
    its frame count; reading reaches the blank frames only part-way through.
    """
    with open(source, "rb") as handle:
        data = bytearray(handle.read())
    chunks = avi_frame_chunks(bytes(data))
    for frame in frames:
        offset, size = chunks[frame]
        data[offset + 8:offset + 8 + size] = bytes(size)
    with open(target, "wb") as handle:
        handle.write(data)
    return target


def declare_avi_frame_size(source: str, target: str, width: int, height: int) -> str:
    """Copy an MJPG AVI claiming frames of width x height in its headers and in every JPEG.

    The file stays small; a decoder believing it would allocate width x height
    pixels per frame.
    """
    with open(source, "rb") as handle:
        data = bytearray(handle.read())
    at = data.find(b"avih")
    struct.pack_into("<II", data, at + 8 + 32, width, height)  # dwWidth, dwHeight
    at = data.find(b"strf")
    struct.pack_into("<ii", data, at + 8 + 4, width, height)  # BITMAPINFOHEADER biWidth, biHeight
    for offset, size in avi_frame_chunks(bytes(data)):
        sof = data.find(b"\xff\xc0", offset + 8, offset + 8 + size)
        struct.pack_into(">HH", data, sof + 5, height, width)  # the JPEG's own frame size
    with open(target, "wb") as handle:
        handle.write(data)
    return target


def _jpeg_segment(marker: int, payload: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload


def flat_jpeg(width: int, height: int) -> bytes:
    """A valid baseline JPEG (YCbCr 4:2:0) of width x height pixels, all mid grey.

    Written directly, never as pixels: a 16000 x 16000 one takes 1.5 MB and
    a millisecond to make, where encoding its pixels would take 768 MB. Each
    Huffman table holds one code, "difference 0" and "end of block", so every
    8 x 8 block is two zero bits.
    """
    blocks = ((width + 15) // 16) * ((height + 15) // 16) * 6  # four luma blocks and two chroma a 16 x 16 unit
    components = b"\x01\x22\x00" + b"\x02\x11\x00" + b"\x03\x11\x00"  # id, sampling, quantisation table
    one_code = bytes([1] + [0] * 15) + b"\x00"  # one code of length 1, for the symbol 0
    return (b"\xff\xd8"
            + _jpeg_segment(0xDB, b"\x00" + bytes([1] * 64))
            + _jpeg_segment(0xC0, struct.pack(">BHHB", 8, height, width, 3) + components)
            + _jpeg_segment(0xC4, b"\x00" + one_code + b"\x10" + one_code)  # DC table 0, AC table 0
            + _jpeg_segment(0xDA, b"\x03\x01\x00\x02\x00\x03\x00\x00\x3f\x00")
            + bytes((blocks * 2 + 7) // 8) + b"\xff\xd9")


def mjpeg_avi(target: str, jpegs: Sequence[bytes], size=(160, 120), fps: int = 10) -> str:
    """An MJPEG AVI whose frames are `jpegs` as they are, its headers declaring `size`.

    Each frame keeps its own JPEG header, so one frame can be much larger than
    the headers and the others say.
    """
    from fractions import Fraction

    import av

    with av.open(target, "w", format="avi") as out:
        stream = out.add_stream("mjpeg", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuvj420p"
        for index, jpeg in enumerate(jpegs):
            packet = av.Packet(jpeg)
            packet.stream = stream
            packet.pts = packet.dts = index
            packet.time_base = Fraction(1, fps)
            packet.is_keyframe = True
            out.mux(packet)
    return target
