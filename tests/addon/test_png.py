"""dreamtime_blender/png.py against Pillow, on every filter type PNG has."""

import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import load_by_path

png = load_by_path("dreamtime_blender/png.py")


def write_with_filters(path, image: np.ndarray, filters: list[int]) -> None:
    """A PNG whose rows use the given filter types (encoded here, decoded by Pillow as reference)."""
    import struct

    height, width, channels = image.shape
    data = image.astype(np.int32)
    rows = []
    for r in range(height):
        kind = filters[r % len(filters)]
        row = data[r].reshape(-1)
        left = np.concatenate([np.zeros(channels, np.int32), row[:-channels]])
        up = data[r - 1].reshape(-1) if r else np.zeros_like(row)
        up_left = np.concatenate([np.zeros(channels, np.int32), up[:-channels]])
        p = left + up - up_left
        pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
        pred = [0, left, up, (left + up) // 2, paeth][kind]
        rows.append(bytes([kind]) + ((row - pred) & 255).astype(np.uint8).tobytes())
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    path.write_bytes(png.SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("filters", [[0], [1, 2], [3], [4], [0, 1, 2, 3, 4]])
def test_every_filter_and_channel_count(tmp_path, channels, filters):
    image = np.random.default_rng(channels).integers(0, 256, (13, 17, channels), dtype=np.uint8)
    write_with_filters(tmp_path / "a.png", image, filters)
    decoded = png.read_png(str(tmp_path / "a.png"))
    assert np.array_equal(decoded, image)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")).reshape(decoded.shape), image)


def test_pillow_written_preview_and_blender_order(tmp_path):
    x = np.linspace(0, 1, 64)
    image = (np.stack([np.outer(x, x), np.outer(1 - x, x), np.full((64, 64), 0.5)], -1) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "p.png")
    assert np.array_equal(png.read_png(str(tmp_path / "p.png")), image)
    flat, width, height = png.read_rgba_for_blender(str(tmp_path / "p.png"))
    rgba = flat.reshape(height, width, 4)
    assert flat.dtype == np.float32 and (width, height) == (64, 64)
    assert np.allclose(rgba[::-1, :, :3] * 255, image, atol=1e-3) and np.all(rgba[..., 3] == 1)


@pytest.mark.parametrize("data, words", [(b"GIF89a", "not a PNG"), (png.SIGNATURE, "no IHDR")])
def test_not_a_png(tmp_path, data, words):
    (tmp_path / "x.png").write_bytes(data)
    with pytest.raises(png.PNGError, match=words):
        png.read_png(str(tmp_path / "x.png"))
