"""Frame bombs: valid JPEGs of any size that are small files, and MJPEG AVIs assembled from any JPEGs.

A frame whose header says 16000 x 16000 costs a decoder 768 MB of pixels;
the file costs 1.5 MB. tests/test_frame_bombs.py and
bench/experiment_frame_bombs.py send such frames behind small ones.
"""
from __future__ import annotations

import struct
from typing import Sequence


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
