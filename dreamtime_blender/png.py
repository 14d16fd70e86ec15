"""A small PNG reader (zlib + numpy) for previews, run on the client's reader thread.

Blender's own loader (`bpy.data.images.load`) must run on the main thread and costs ~10 ms for a
512² image; decoding here, off the main thread, leaves the main thread only `foreach_set`.
Supports 8-bit greyscale, grey+alpha, RGB and RGBA, non-interlaced (what the backend writes).

PNG filters predict each byte from its left (a), up (b) and up-left (c) neighbours. Sub and Up
rows vectorize directly; Average and Paeth depend on the decoded left pixel, so those rows are
undone one anti-diagonal of pixels at a time (all pixels on a diagonal are independent).
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 4: 2, 2: 3, 6: 4}  # colour type -> samples per pixel


class PNGError(ValueError):
    """Not a PNG this reader handles."""


def read_png(path: str) -> np.ndarray:
    """(H, W, C) uint8, top row first, C = 1..4."""
    with open(path, "rb") as handle:
        data = handle.read()
    if not data.startswith(SIGNATURE):
        raise PNGError(f"{path}: not a PNG file")
    pos, chunks, header = len(SIGNATURE), [], None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        raise PNGError(f"{path}: no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in CHANNELS or interlace:
        raise PNGError(f"{path}: only 8-bit non-interlaced grey/RGB(A) PNGs are read here")
    channels = CHANNELS[colour]
    try:
        raw = zlib.decompress(b"".join(chunks))
    except zlib.error as exc:
        raise PNGError(f"{path}: corrupt image data ({exc})") from None
    stride = width * channels
    if len(raw) < height * (stride + 1):
        raise PNGError(f"{path}: truncated image data")
    rows = np.frombuffer(raw, np.uint8, height * (stride + 1)).reshape(height, stride + 1)
    return unfilter(rows[:, 0], rows[:, 1:].reshape(height, width, channels))


def unfilter(filters: np.ndarray, data: np.ndarray) -> np.ndarray:
    """Undo the per-row PNG filters: filters (H,), data (H, W, C) uint8 -> decoded (H, W, C)."""
    if filters.max(initial=0) > 4:
        raise PNGError("unknown PNG filter type")
    out = data.astype(np.int32)  # (H, W, C); rows overwritten in place as they are decoded
    height, width, _ = out.shape
    sequential = np.isin(filters, (3, 4))
    if not sequential.any():  # None / Sub / Up only: row by row, each row vectorized
        for r in range(height):
            _simple_row(out, r, filters[r])
        return out.astype(np.uint8)
    return _unfilter_diagonals(filters, out).astype(np.uint8)


def _unfilter_diagonals(filters: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Undo any mix of filters, one anti-diagonal (r + x = d) of pixels at a time, on flat arrays."""
    height, width, channels = out.shape
    row = (width + 1) * channels  # padded with a zero row above and a zero column on the left
    buf = np.zeros((height + 1) * row, np.int32)
    buf.reshape(height + 1, width + 1, channels)[1:, 1:] = out
    r, x = np.divmod(np.arange(height * width), width)
    order = np.argsort(r + x, kind="stable")  # pixels grouped by diagonal
    lanes = (((r[order] + 1) * (width + 1) + x[order] + 1) * channels)[:, None] + np.arange(channels)
    lanes, kinds = lanes.ravel(), np.repeat(filters.astype(np.int32)[r[order]], channels)
    bounds = np.searchsorted((r + x)[order], np.arange(height + width)) * channels
    for start, stop in zip(bounds[:-1], bounds[1:]):
        idx, k = lanes[start:stop], kinds[start:stop]
        a, b, c = buf[idx - channels], buf[idx - row], buf[idx - row - channels]
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        pred = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))  # Paeth (4)
        pred = np.where(k == 4, pred, np.where(k == 3, (a + b) >> 1, np.where(k == 2, b, np.where(k == 1, a, 0))))
        buf[idx] = (buf[idx] + pred) & 255
    return buf.reshape(height + 1, width + 1, channels)[1:, 1:]


def _simple_row(out: np.ndarray, r: int, kind: int) -> None:
    if kind == 1:  # Sub: running sum along the row
        out[r] = np.cumsum(out[r], axis=0) & 255
    elif kind == 2 and r > 0:  # Up
        out[r] = (out[r] + out[r - 1]) & 255


def read_rgba_for_blender(path: str) -> tuple[np.ndarray, int, int]:
    """Flat float32 RGBA in Blender's pixel order (bottom row first), with width and height."""
    image = read_png(path)
    height, width, channels = image.shape
    rgba = np.empty((height, width, 4), np.float32)
    if channels in (1, 2):
        rgba[..., :3] = image[..., :1]
    else:
        rgba[..., :3] = image[..., :3]
    rgba[..., 3] = image[..., -1] if channels in (2, 4) else 255
    rgba *= 1.0 / 255.0
    return np.ascontiguousarray(rgba[::-1]).ravel(), width, height
