"""Opening images we did not make (uploads, gallery folders, datasets): one loader, specific refusals.

`open_image(src, max_pixels=None)` takes a path, bytes, a binary file object or a PIL image and returns an
8-bit RGB PIL image, or raises `rsdemo.data.errors.DataError` (a ValueError) whose one-line message names the
file and the problem. What it does with each kind of file:

- missing, empty (0 bytes), not an image, truncated or corrupt: refused, saying which.
- pixel limit: an image over `max_pixels` (default 40 megapixels; env RSDEMO_MAX_PIXELS) is refused from its
  header, before any pixel is decoded, so a decompression bomb costs nothing. We refuse rather than downscale:
  only JPEG has a cheap safe downscale (draft mode), PNG/TIFF would have to be decoded in full first, and one
  rule for every format is easier to state. Users can resize; retrieval models see 128-256 px anyway.
- grayscale, palette, CMYK, YCbCr, 1-bit: converted to RGB (CMYK without colour management).
- transparency (RGBA, LA, PA, palette or RGB with a transparent colour): composited on white, which is how a
  browser shows the upload to the user.
- more than 8 bits (16-bit, 32-bit integer, float): stretched linearly from the image's minimum..maximum to
  0..255 (a float image already within [0, 1] is scaled by 255), so nothing clips; NaN/inf are left out of the
  range and shown black.
- multi-band TIFF (R, G, B, NIR, ... as written by remote-sensing tools): the first three bands as RGB; one or
  two bands: the first as gray. PIL opens few of these (4-band, float or 16-bit RGB TIFFs are unidentified or
  lose their low byte), so baseline TIFFs (strips or tiles, uncompressed or deflate, predictor 1/2) are read
  here with numpy; other compressions go to PIL.
- EXIF orientation is applied; of a multi-frame file (GIF, multi-page TIFF) the first frame is used.
"""
from __future__ import annotations

import io
import math
import os
import re
import struct
import zlib

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import DataError

DEFAULT_MAX_PIXELS = 40_000_000
FORMATS = "PNG, JPEG, TIFF, WebP, BMP or GIF"
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_HIGH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
# raster formats only: PIL would also open EPS (through Ghostscript), PSD, ICO, PDF-adjacent and more, none of
# which an aerial photo needs, and each is more decoder code exposed to uploads
_PIL_FORMATS = ("PNG", "JPEG", "MPO", "TIFF", "WEBP", "BMP", "GIF", "JPEG2000", "PPM")


def max_pixels_default() -> int:
    v = os.environ.get("RSDEMO_MAX_PIXELS")
    try:
        return int(float(v)) if v else DEFAULT_MAX_PIXELS
    except ValueError:
        return DEFAULT_MAX_PIXELS


def _error(msg: str) -> DataError:
    return DataError(msg)


def open_image(src, max_pixels: int | None = None):
    """src (path, bytes, binary file or PIL image) -> PIL RGB image; DataError with a specific message."""
    limit = max_pixels_default() if max_pixels is None else int(max_pixels)
    if isinstance(src, Image.Image):
        _check_size(src.size, "image", limit)
        return _to_rgb(src, "image")
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _open_stream(io.BytesIO(bytes(src)), "image", limit)
    if isinstance(src, (str, os.PathLike)):
        name = os.path.basename(os.fspath(src)) or os.fspath(src)
        if os.path.isdir(src):
            raise _error(f"{name}: is a folder, not an image file")
        if os.path.exists(src) and not os.path.isfile(src):  # a device or a pipe would block or never end
            raise _error(f"{name}: not a regular file")
        try:
            f = open(src, "rb")
        except FileNotFoundError:
            raise _error(f"{name}: no such file") from None
        except OSError as e:
            raise _error(f"{name}: cannot be read ({e.strerror or e})") from None
        with f:
            return _open_stream(f, name, limit)
    if hasattr(src, "read"):
        name = os.path.basename(str(getattr(src, "name", "") or "image"))
        if not (hasattr(src, "seekable") and src.seekable()):
            src = io.BytesIO(src.read())
        return _open_stream(src, name, limit)
    raise _error(f"expected an image file path, bytes or a PIL image, got {type(src).__name__}")


def _check_size(size, name: str, limit: int) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise _error(f"{name}: image has no pixels ({w}x{h})")
    if w * h > limit:
        raise _error(f"{name}: image is {w}x{h} ({w * h / 1e6:.1f} megapixels), over the "
                     f"{limit / 1e6:g}-megapixel limit; downscale it and try again")


def _open_stream(f, name: str, limit: int):

    head = f.read(16)
    if not head:
        raise _error(f"{name}: empty file (0 bytes)")
    f.seek(0)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        arr = _read_tiff(f, name, limit)
        if arr is not None:
            return Image.fromarray(_bands_to_rgb(arr), "RGB")
        f.seek(0)
    try:
        Image.init()  # registers every plugin, so the formats below can be named
        im = Image.open(f, formats=[k for k in _PIL_FORMATS if k in Image.OPEN])
    except Image.DecompressionBombError as e:  # PIL's own guard, for sizes far past ours
        m = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(m.group(1)) / 1e6:.1f} megapixels" if m else "too many pixels"
        raise _error(f"{name}: image is {size}, over the {limit / 1e6:g}-megapixel limit; downscale it and try "
                     f"again") from None
    except UnidentifiedImageError:
        raise _error(f"{name}: not an image file, or a kind this demo cannot read (expected {FORMATS})") from None
    except (OSError, ValueError, SyntaxError, struct.error, EOFError) as e:
        raise _error(f"{name}: corrupt image header ({_reason(e)})") from None
    with im:
        fmt = im.format or "image"
        _check_size(im.size, name, limit)
        if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone relaxed PIL globally; a half image must still be refused
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            im.load()
        except Image.DecompressionBombError:
            raise _error(f"{name}: image is over the pixel limit (decompression bomb guard)") from None
        except (OSError, ValueError, SyntaxError, struct.error, EOFError, IndexError, zlib.error) as e:
            raise _error(f"{name}: truncated or corrupt {fmt} file ({_reason(e)})") from None
        try:  # only when there is an orientation to apply: exif_transpose copies the image otherwise
            if im.getexif().get(0x0112, 1) != 1:
                return _to_rgb(ImageOps.exif_transpose(im), name)
        except Exception:  # noqa: BLE001 - a broken EXIF block only loses the orientation
            pass
        return _to_rgb(im, name)


def _reason(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _to_rgb(im, name: str):
    mode = im.mode
    if mode in _HIGH_MODES:
        return Image.fromarray(_bands_to_rgb(np.asarray(im)[..., None]), "RGB")
    if mode == "P" and "transparency" in im.info:
        mode, im = "RGBA", im.convert("RGBA")
    elif mode in ("L", "RGB") and "transparency" in im.info:
        mode, im = "RGBA", im.convert("RGBA")
    if mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as e:
        raise _error(f"{name}: pixel mode {mode} cannot be shown as RGB ({_reason(e)})") from None


def _bands_to_rgb(a: np.ndarray) -> np.ndarray:
    """[H, W, C] samples of any numeric type -> [H, W, 3] uint8: first three bands (or the first as gray)."""
    a = a[..., :3] if a.shape[-1] >= 3 else a[..., :1]
    a = to_uint8(a)
    return np.ascontiguousarray(np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a)


def to_uint8(a: np.ndarray) -> np.ndarray:
    """Linear stretch to 0..255 without clipping: min..max of the finite values (floats within [0, 1]: x255)."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == bool:
        return a.astype(np.uint8) * 255
    f = a.astype(np.float32)
    ok = np.isfinite(f)
    if not ok.any():
        return np.zeros(a.shape, np.uint8)
    lo, hi = float(f[ok].min()), float(f[ok].max())
    if a.dtype.kind == "f" and lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    f = (f - lo) * (255.0 / (hi - lo))
    f[~ok] = 0
    return np.clip(np.rint(f), 0, 255).astype(np.uint8)


# ---- a baseline TIFF reader for what PIL cannot open ----------------------------------------------------------

_TYPES = {1: "B", 2: "B", 3: "H", 4: "I", 5: "II", 6: "b", 7: "B", 8: "h", 9: "i", 10: "ii", 11: "f", 12: "d",
          16: "Q"}


def _read_tiff(f, name: str, limit: int) -> np.ndarray | None:
    """First page of a TIFF as [H, W, bands] samples, or None to let PIL decode it (palette, CMYK, JPEG, LZW,
    plain 8-bit gray/RGB/RGBA). Every offset is checked against the file, so a hostile file gets an error."""
    size = f.seek(0, 2)  # read by ranges: a large gallery file is never loaded whole
    f.seek(0)
    bo = "<" if f.read(2) == b"II" else ">"

    def read_at(off, n):
        if off < 0 or off + n > size:
            raise _error(f"{name}: truncated or corrupt TIFF file (data at byte {off} beyond the file's {size} "
                         f"bytes)")
        f.seek(off)
        return f.read(n)

    def unpack(fmt, off):
        return struct.unpack(bo + fmt, read_at(off, struct.calcsize(bo + fmt)))

    (ifd,) = unpack("I", 4)
    (n,) = unpack("H", ifd)
    if n > 1000:
        raise _error(f"{name}: corrupt TIFF file ({n} tags in the first directory)")
    tags = {}
    for i in range(n):
        tag, typ, count, raw = unpack("HHI4s", ifd + 2 + 12 * i)
        code = _TYPES.get(typ)
        if code is None or count > 1_000_000:
            continue
        nbytes = struct.calcsize(bo + code) * count
        if nbytes <= 4:
            vals = raw[:nbytes]
        else:
            vals = read_at(struct.unpack(bo + "I", raw)[0], nbytes)
        tags[tag] = list(struct.unpack(bo + code * count, vals))

    def one(tag, default=None):
        v = tags.get(tag)
        return v[0] if v else default

    w, h = one(256), one(257)
    if w is None or h is None:
        raise _error(f"{name}: corrupt TIFF file (no image width/height)")
    _check_size((w, h), name, limit)
    spp = one(277, 1)
    bits = tags.get(258, [1])
    fmt = one(339, 1)
    photometric, compression = one(262), one(259, 1)
    planar, predictor = one(284, 1), one(317, 1)
    extra = tags.get(338, [])
    plain8 = bits[0] == 8 and fmt == 1 and planar == 1 and (spp in (1, 3) or (spp == 4 and extra[:1] in ([1], [2])))
    if photometric not in (1, 2) or plain8:
        return None  # palette, CMYK, YCbCr, 1-bit, white-is-zero, plain 8-bit: PIL does these right
    if compression not in (1, 8, 32946) or predictor not in (1, 2) or len(set(bits)) != 1 \
            or (predictor == 2 and fmt == 3):
        return None
    b = bits[0]
    kind = {1: "u", 2: "i", 3: "f"}.get(fmt)
    if kind is None or b not in (8, 16, 32, 64) or (kind == "f" and b == 8) or not 1 <= spp <= 256:
        raise _error(f"{name}: TIFF with {spp} band(s) of {b}-bit samples (format {fmt}) is not supported")
    dt = np.dtype(f"{bo}{kind}{b // 8}")
    need = 3 if spp >= 3 else 1  # the bands we show; the rest are skipped (planar) or dropped per block
    if w * h * spp * dt.itemsize > 16 * limit:
        raise _error(f"{name}: TIFF of {w}x{h} with {spp} bands of {b}-bit samples is too large to open here")
    if planar == 2:
        planes, per = need, 1
    else:
        planes, per = 1, spp
    if 322 in tags:  # tiles
        tw, th = one(322), one(323)
        offs, counts = tags.get(324, []), tags.get(325, [])
        if not tw or not th:
            raise _error(f"{name}: corrupt TIFF file (tile size 0)")
        across, down = math.ceil(w / tw), math.ceil(h / th)
        blocks = [(p, (t // across) * th, (t % across) * tw, th, tw)
                  for p in range(planes) for t in range(across * down)]
    else:
        rps = min(one(278, h) or h, h)
        offs, counts = tags.get(273, []), tags.get(279, [])
        per_plane = math.ceil(h / rps)
        blocks = [(p, s * rps, 0, min(rps, h - s * rps), w) for p in range(planes) for s in range(per_plane)]
    if len(offs) < len(blocks) or len(counts) < len(blocks) or len(blocks) > 1_000_000:
        raise _error(f"{name}: corrupt TIFF file ({len(offs)} data blocks, {len(blocks)} expected)")
    out = np.zeros((h, w, need), dt)
    for (p, y, x, bh, bw), off, cnt in zip(blocks, offs, counts):
        want = bh * bw * per * dt.itemsize
        raw = read_at(off, cnt)
        if compression != 1:
            try:
                raw = zlib.decompressobj().decompress(raw, want)  # bounded: a deflate bomb stops at `want`
            except zlib.error as e:
                raise _error(f"{name}: corrupt TIFF file (deflate data: {e})") from None
        if len(raw) < want:
            raise _error(f"{name}: truncated or corrupt TIFF file (a data block holds {len(raw)} of {want} bytes)")
        blk = np.frombuffer(raw[:want], dt).reshape(bh, bw, per)
        if predictor == 2:  # horizontal differencing: each sample stored as the difference to its left one
            blk = np.cumsum(blk, axis=1, dtype=dt) if kind != "f" else blk
        hh, ww = min(bh, h - y), min(bw, w - x)
        if planar == 2:
            out[y:y + hh, x:x + ww, p:p + 1] = blk[:hh, :ww]
        else:
            out[y:y + hh, x:x + ww] = blk[:hh, :ww, :need]
    return out
