"""Hostile and unusual files, written by code: images of every awkward kind, a minimal TIFF writer (PIL cannot
write multi-band, float-RGB or planar TIFFs), and a pickle that would run code when loaded.
"""
from __future__ import annotations

import io
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_tiff(path, arr: np.ndarray, photometric: int = 1, planar: int = 1, deflate: bool = False,
               predictor: int = 1, tile: int | None = None, extra: int | None = None, big_endian: bool = False):
    """A baseline TIFF of arr [H, W, C] (uint8/16/32, int16, float32/64), one strip per plane or tiles of `tile`."""
    bo = ">" if big_endian else "<"
    h, w, c = arr.shape
    a = arr.astype(arr.dtype.newbyteorder(bo))
    fmt = {"u": 1, "i": 2, "f": 3}[a.dtype.kind]
    bits = a.dtype.itemsize * 8

    def encode(block):  # block [bh, bw, n]
        if predictor == 2:
            block = block.copy()
            block[:, 1:] = np.diff(block, axis=1)
        raw = np.ascontiguousarray(block).tobytes()
        return zlib.compress(raw) if deflate else raw

    planes = [a[..., p:p + 1] for p in range(c)] if planar == 2 else [a]
    blocks = []
    for pl in planes:
        if tile:
            for ty in range(0, h, tile):
                for tx in range(0, w, tile):
                    t = np.zeros((tile, tile, pl.shape[2]), a.dtype)
                    part = pl[ty:ty + tile, tx:tx + tile]
                    t[:part.shape[0], :part.shape[1]] = part
                    blocks.append(encode(t))
        else:
            blocks.append(encode(pl))
    tags = {256: (4, [w]), 257: (4, [h]), 258: (3, [bits] * c), 259: (3, [8 if deflate else 1]),
            262: (3, [photometric]), 277: (3, [c]), 284: (3, [planar]), 317: (3, [predictor]), 339: (3, [fmt] * c)}
    if extra is not None and c > 3:
        tags[338] = (3, [extra] * (c - 3))
    if tile:
        tags[322], tags[323] = (4, [tile]), (4, [tile])
        off_tag, cnt_tag = 324, 325
    else:
        tags[278] = (4, [h])
        off_tag, cnt_tag = 273, 279
    tags[off_tag] = (4, [0] * len(blocks))
    tags[cnt_tag] = (4, [len(b) for b in blocks])
    # layout: header, pixel blocks, then the IFD and its out-of-line values
    out = bytearray(8)
    offsets = []
    for b in blocks:
        offsets.append(len(out))
        out += b
        if len(out) % 2:
            out += b"\0"
    tags[off_tag] = (4, offsets)
    ifd = len(out)
    n = len(tags)
    values_at = ifd + 2 + 12 * n + 4
    entries, values = b"", b""
    for tag in sorted(tags):
        typ, vals = tags[tag]
        code = "H" if typ == 3 else "I"
        payload = struct.pack(bo + code * len(vals), *vals)
        if len(payload) <= 4:
            entries += struct.pack(bo + "HHI", tag, typ, len(vals)) + payload.ljust(4, b"\0")
        else:
            entries += struct.pack(bo + "HHII", tag, typ, len(vals), values_at + len(values))
            values += payload
    out += struct.pack(bo + "H", n) + entries + struct.pack(bo + "I", 0) + values
    out[:8] = (b"MM\0*" if big_endian else b"II*\0") + struct.pack(bo + "I", ifd)
    Path(path).write_bytes(bytes(out))
    return Path(path)


def encoded(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def noise(h=48, w=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def png_bomb_header(w: int, h: int) -> bytes:
    """A PNG whose header claims w x h pixels, with a tiny (invalid) body: the size must be refused unread."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


class Evil:
    """Unpickling this calls os.mkdir(marker): code execution, visible as a new folder."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def evil_pickle(path, marker) -> Path:
    Path(path).write_bytes(pickle.dumps({"weight": Evil(marker)}))
    return Path(path)


def evil_torch(path, marker) -> Path:
    """A torch.save zip file (what .pt/.bin weights look like) whose pickle holds the payload."""
    import torch

    torch.save({"state_dict": {"weight": torch.zeros(2)}, "hook": Evil(marker)}, path)
    return Path(path)
