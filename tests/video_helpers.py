"""Video files in the encodings the decoders must agree on, written with PyAV (shared by the video tests)."""

from __future__ import annotations

from fractions import Fraction

import av


def write_encoded(path, frames, codec="mpeg4", tag=None, b_frames=0, gop=12):
    """Frames encoded with ``codec`` (PyAV directly), a keyframe every ``gop`` frames, up to ``b_frames``
    B-frames in a row; ``tag`` sets the FourCC (UCF-101's AVIs are MPEG-4 Part 2 tagged XVID)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(25))
        s.pix_fmt = "yuv420p"
        s.height, s.width = frames.shape[1:3]
        s.codec_context.max_b_frames = b_frames
        s.codec_context.gop_size = gop
        if tag:
            s.codec_context.codec_tag = tag
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())


def _vop_type(packet: bytes) -> str:
    """I, P, B or S from the packet's first VOP header (start code 0x000001B6, then two type bits)."""
    at = packet.find(b"\x00\x00\x01\xb6")
    return "IPBS"[packet[at + 4] >> 6]


# A P-VOP header with vop_coded = 0: start code, '01' (P), '0' (no whole seconds), '1' marker, '00000' (the time
# increment, 5 bits for the encoder's time resolution of 25), '1' marker, '0' (not coded), then the stuffing '01111'.
NOT_CODED_VOP = b"\x00\x00\x01\xb6\x50\x4f"


def write_divx_packed_avi(path, frames, gop=12):
    """An AVI as DivX and early Xvid wrote them, with 'packed' B-frames: MPEG-4 Part 2 with one B-frame between
    references, each B-frame stored in the chunk of the reference that follows it, a not-coded VOP in the next
    chunk, and the 'DivX503b1393p' user data that tells decoders so. UCF-101's AVIs are DivX-encoded (its paper)
    and FFmpeg reports packed B-frames in them (facebookresearch/VMZ issue 12)."""
    unpacked = path.with_name("unpacked.avi")
    write_encoded(unpacked, frames, "mpeg4", "XVID", b_frames=1, gop=gop)
    with av.open(str(unpacked)) as source:
        stream = source.streams.video[0]
        packets = [(bytes(p), p.is_keyframe) for p in source.demux(stream) if p.size]
        chunks, i = [], 0
        while i < len(packets):
            data, key = packets[i]
            if i + 1 < len(packets) and _vop_type(data) in "IP" and _vop_type(packets[i + 1][0]) == "B":
                chunks += [(data + packets[i + 1][0], key), (NOT_CODED_VOP, False)]
                i += 2
            else:
                chunks.append((data, key))
                i += 1
        with av.open(str(path), "w") as out:
            packed = out.add_stream_from_template(stream)
            packed.codec_context.codec_tag = "XVID"
            packed.codec_context.extradata = stream.codec_context.extradata + b"\x00\x00\x01\xb2DivX503b1393p"
            for n, (data, key) in enumerate(chunks):
                packet = av.Packet(data)
                packet.stream, packet.pts, packet.dts, packet.time_base = packed, n, n, stream.time_base
                packet.is_keyframe = key
                out.mux(packet)
    unpacked.unlink()
