"""tinydiff.images: grids, the hand-written PNG codec, atomic writes, labels, the evolution sheet, the preview."""

from __future__ import annotations

import io
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from tinydiff.errors import TinyDiffError
from tinydiff.images import (
    DISPLAY_SCALE,
    decode_png,
    encode_png,
    evolution_sheet,
    grid_shape,
    make_grid,
    render_text,
    save_png,
    step_label,
    terminal_preview,
    upscale,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunks(data: bytes) -> list[tuple[bytes, bytes, int]]:
    """(type, body, stored CRC) of every chunk, parsed independently of tinydiff's decoder."""
    assert data[:8] == PNG_SIGNATURE
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        assert len(body) == length, f"chunk {kind!r} is cut short"
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        chunks.append((kind, body, crc))
        pos += 12 + length
    assert pos == len(data), "trailing bytes after the last chunk"
    return chunks


# -- make_grid ------------------------------------------------------------------------


def constant_images(n: int, h: int, w: int) -> np.ndarray:
    return np.stack([np.full((h, w), 10 * (k + 1), dtype=np.uint8) for k in range(n)])


def test_make_grid_shape_and_placement_default_layout() -> None:
    images = constant_images(5, 3, 4)
    grid = make_grid(images)  # nrow = ceil(sqrt(5)) = 3 -> 2 rows, padding 2
    assert grid.dtype == np.uint8
    assert grid.shape == (2 * (3 + 2) + 2, 3 * (4 + 2) + 2)
    for k in range(5):
        r, c = divmod(k, 3)
        y, x = 2 + r * 5, 2 + c * 6
        assert (grid[y : y + 3, x : x + 4] == 10 * (k + 1)).all(), f"image {k} is not at row {r}, column {c}"
    # everything that is not an image is padding
    mask = np.zeros_like(grid, dtype=bool)
    for k in range(5):
        r, c = divmod(k, 3)
        mask[2 + r * 5 : 5 + r * 5, 2 + c * 6 : 6 + c * 6] = True
    assert (grid[~mask] == 0).all()
    assert grid[mask].sum() == sum(10 * (k + 1) * 12 for k in range(5))


def test_make_grid_nrow_padding_and_pad_value() -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 200, size=(6, 5, 7), dtype=np.uint8)
    grid = make_grid(images, nrow=4, padding=1, pad_value=255)
    assert grid.shape == (2 * (5 + 1) + 1, 4 * (7 + 1) + 1)
    for k in range(6):
        r, c = divmod(k, 4)
        y, x = 1 + r * 6, 1 + c * 8
        np.testing.assert_array_equal(grid[y : y + 5, x : x + 7], images[k])
    # the two empty slots of the last row are pad_value, as are the borders
    assert (grid[7:12, 1 + 2 * 8 :] == 255).all()
    assert (grid[0] == 255).all() and (grid[:, 0] == 255).all() and (grid[-1] == 255).all()


def test_wide_images_sit_half_a_digit_apart_so_two_numbers_do_not_read_as_one() -> None:
    images = np.full((4, 28, 94), 200, dtype=np.uint8)  # four numbers filling their canvases
    grid = make_grid(images, nrow=2)
    assert grid.shape == (2 * (28 + 2) + 2, 2 * (94 + 14) + 14)
    np.testing.assert_array_equal(grid[2:30, 14:108], images[0])
    assert (grid[2:30, 108:122] == 0).all()  # the gap between the two numbers of a row
    np.testing.assert_array_equal(grid[2:30, 122:216], images[1])
    assert make_grid(images[:, :, :28], nrow=2).shape == (62, 62)  # digits keep their 2-pixel padding


def test_make_grid_single_image_and_no_padding() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    np.testing.assert_array_equal(make_grid(image, padding=0), image[0])
    row = make_grid(constant_images(3, 2, 2), nrow=3, padding=0)
    assert row.shape == (2, 6)
    np.testing.assert_array_equal(row[0], [10, 10, 20, 20, 30, 30])


@pytest.mark.parametrize("n, nrow", [(1, None), (5, None), (16, None), (6, 4), (7, 7)])
def test_grid_shape_is_the_shape_make_grid_makes(n, nrow) -> None:
    assert grid_shape(n, 5, 7, nrow=nrow, padding=3) == make_grid(constant_images(n, 5, 7), nrow=nrow, padding=3).shape


# -- upscaling ------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [1, 2, 3, DISPLAY_SCALE])
def test_upscale_makes_each_pixel_a_square_as_pillows_nearest_neighbour_does(scale) -> None:
    from PIL import Image

    image = np.random.default_rng(scale).integers(0, 256, size=(5, 7), dtype=np.uint8)
    big = upscale(image, scale)
    assert big.shape == (5 * scale, 7 * scale) and big.dtype == np.uint8
    np.testing.assert_array_equal(big, np.kron(image, np.ones((scale, scale), dtype=np.uint8)))
    pillow = Image.fromarray(image).resize((7 * scale, 5 * scale), Image.Resampling.NEAREST)
    np.testing.assert_array_equal(big, np.asarray(pillow))


def test_the_display_scale_makes_the_default_grid_big_enough_to_see() -> None:
    assert DISPLAY_SCALE == 4
    assert upscale(make_grid(constant_images(16, 28, 28)), DISPLAY_SCALE).shape == (488, 488)


@pytest.mark.parametrize("scale", [0, -1, 1.5, True])
def test_upscale_refuses_a_scale_that_is_not_a_whole_number_from_1(scale) -> None:
    with pytest.raises(TinyDiffError, match="scale must be a whole number, 1 or more"):
        upscale(np.zeros((2, 2), dtype=np.uint8), scale)


# -- PNG ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (28, 28), (5, 7), (7, 5), (62, 122)])
def test_png_round_trip(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, size=shape, dtype=np.uint8)
    data = encode_png(image)
    back = decode_png(data)
    assert back.dtype == np.uint8
    assert back.shape == shape
    np.testing.assert_array_equal(back, image)


def test_png_round_trip_of_extremes_and_non_contiguous_input() -> None:
    image = np.zeros((4, 6), dtype=np.uint8)
    image[:, ::2] = 255
    np.testing.assert_array_equal(decode_png(encode_png(image)), image)
    transposed = np.arange(24, dtype=np.uint8).reshape(4, 6).T  # a non-contiguous view
    np.testing.assert_array_equal(decode_png(encode_png(transposed)), transposed)


def test_png_structure_signature_and_crcs() -> None:
    image = np.random.default_rng(1).integers(0, 256, size=(9, 13), dtype=np.uint8)
    data = encode_png(image)
    assert data.startswith(PNG_SIGNATURE)
    chunks = png_chunks(data)
    kinds = [kind for kind, _, _ in chunks]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    for kind, body, crc in chunks:
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in chunk {kind!r}"
    width, height, depth, colour, compression, filter_method, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (width, height) == (13, 9)
    assert (depth, colour, compression, filter_method, interlace) == (8, 0, 0, 0, 0)  # 8-bit grayscale
    assert chunks[-1][1] == b""
    raw = zlib.decompress(b"".join(body for kind, body, _ in chunks if kind == b"IDAT"))
    assert len(raw) == 9 * (13 + 1)  # one filter byte per row


def test_png_is_readable_by_pillow() -> None:
    """An independent decoder agrees (Pillow comes with torchvision, a dependency)."""
    from PIL import Image

    image = np.random.default_rng(2).integers(0, 256, size=(10, 17), dtype=np.uint8)
    with Image.open(io.BytesIO(encode_png(image))) as im:
        im.load()
        assert im.mode == "L"
        assert im.size == (17, 10)
        np.testing.assert_array_equal(np.asarray(im), image)


def test_save_png_writes_a_decodable_file(tmp_path: Path) -> None:
    image = np.random.default_rng(3).integers(0, 256, size=(28, 28), dtype=np.uint8)
    save_png(tmp_path / "x.png", image)
    assert sorted(os.listdir(tmp_path)) == ["x.png"]
    np.testing.assert_array_equal(decode_png((tmp_path / "x.png").read_bytes()), image)



# -- render_text and step labels --------------------------------------------------------


@pytest.mark.parametrize("text,scale", [("0", 1), ("7", 2), ("0123456789", 2), ("12k", 3), ("5", 4)])
def test_render_text_shape(text: str, scale: int) -> None:
    img = render_text(text, scale=scale)
    assert img.shape == (5 * scale, (4 * len(text) - 1) * scale)
    assert img.dtype == np.uint8
    assert set(np.unique(img)) <= {0, 255}
    assert img.max() == 255  # every glyph here draws something


def test_render_text_draws_the_glyph() -> None:
    one = render_text("1", scale=1, value=200)
    expected = np.array([[0, 1, 0], [1, 1, 0], [0, 1, 0], [0, 1, 0], [1, 1, 1]], dtype=np.uint8) * 200
    np.testing.assert_array_equal(one, expected)
    scaled = render_text("1", scale=3, value=200)
    np.testing.assert_array_equal(scaled, np.kron(expected, np.ones((3, 3), dtype=np.uint8)))
    two = render_text("11", scale=1)
    assert (two[:, 3] == 0).all(), "a blank column between glyphs"
    np.testing.assert_array_equal(two[:, :3], two[:, 4:])


def test_render_text_draws_capitals_and_punctuation_each_one_distinct() -> None:
    chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ./-=:0123456789k"
    glyphs = {ch: render_text(ch, scale=1).tobytes() for ch in chars}
    assert len(set(glyphs.values())) == len(chars), "no two characters look alike"
    assert all(render_text(ch, scale=1).any() for ch in chars)
    label = render_text("STEP 3/10  SIGMA 2.35", scale=1)
    assert label.shape == (5, 4 * 21 - 1)
    np.testing.assert_array_equal(label[:, 0:3], render_text("S", scale=1))
    np.testing.assert_array_equal(label[:, 4 * 5 : 4 * 5 + 3], render_text("3", scale=1))


def test_render_text_unknown_characters_are_blank() -> None:
    img = render_text("a?", scale=2)
    assert img.shape == (10, 14)
    assert (img == 0).all()


@pytest.mark.parametrize("step,label", [(0, "0"), (500, "500"), (9000, "9000"), (10_000, "10k"), (20_000, "20k"), (12_345, "12345")])
def test_step_label(step: int, label: str) -> None:
    assert step_label(step) == label


# -- evolution_sheet ----------------------------------------------------------------------


def snapshots(n: int, h: int = 10, w: int = 12) -> list[tuple[int, np.ndarray]]:
    """Snapshot i is a grid filled with the value 100 + i, so its column can be found in the sheet."""
    return [(1000 * (i + 1), np.full((h, w), 100 + i, dtype=np.uint8)) for i in range(n)]


def shown(sheet: np.ndarray, label_h: int = 14) -> list[int]:
    """Which snapshots appear, left to right, read from the first grid row."""
    row = sheet[label_h]
    values, prev = [], None
    for v in row.tolist():
        if v != prev and v >= 100:
            values.append(v - 100)
        prev = v
    return values


@pytest.mark.parametrize("n,max_columns", [(1, 8), (5, 8), (8, 8), (9, 8), (20, 8), (100, 8), (20, 5), (3, 2)])
def test_evolution_sheet_picks_first_last_and_at_most_max_columns(n: int, max_columns: int) -> None:
    gap = 6
    sheet = evolution_sheet(snapshots(n), max_columns=max_columns, gap=gap)
    picked = shown(sheet)
    k = min(n, max_columns)
    assert len(picked) <= max_columns
    assert picked[0] == 0 and picked[-1] == n - 1, "the first and the last snapshot are always shown"
    assert picked == sorted(set(picked)), "in step order, each at most once"
    if n <= max_columns:
        assert picked == list(range(n))
    else:
        assert len(picked) == k  # evenly spaced picks over many snapshots are distinct
    assert sheet.dtype == np.uint8
    assert sheet.shape == (14 + 10, len(picked) * 12 + (len(picked) - 1) * gap)


def test_evolution_sheet_labels_and_gaps() -> None:
    snaps = snapshots(2)
    sheet = evolution_sheet(snaps, gap=4)
    assert sheet.shape == (24, 12 + 4 + 12)
    assert (sheet[:, 12:16] == 64).all(), "the gap between columns is grey"
    assert (sheet[14:, :12] == 100).all() and (sheet[14:, 16:] == 101).all()
    label = render_text(step_label(1000))
    top = sheet[:14, :12]
    assert top.max() == 255, "the step number is drawn above its grid"
    assert (top == 255).sum() == (label[:, :12] == 255).sum()


def test_evolution_sheet_mixed_heights_pad_shorter_grids() -> None:
    snaps = [(1, np.full((6, 8), 150, dtype=np.uint8)), (2, np.full((10, 8), 160, dtype=np.uint8))]
    sheet = evolution_sheet(snaps, gap=2)
    assert sheet.shape == (14 + 10, 8 + 2 + 8)
    assert (sheet[14:20, :8] == 150).all() and (sheet[20:, :8] == 0).all()


# -- terminal_preview -----------------------------------------------------------------------


@pytest.mark.parametrize("h,w", [(1, 3), (2, 2), (5, 4), (28, 28), (29, 10)])
def test_terminal_preview_has_ceil_half_height_lines(h: int, w: int) -> None:
    image = np.random.default_rng(h * w).integers(0, 256, size=(h, w), dtype=np.uint8)
    lines = terminal_preview(image)
    assert len(lines) == math.ceil(h / 2)
    for line in lines:
        assert line.plain == "▀" * w


def test_terminal_preview_colours_are_the_pixels() -> None:
    image = np.array([[0, 255], [10, 20], [30, 40]], dtype=np.uint8)
    lines = terminal_preview(image)
    assert len(lines) == 2
    styles = [span.style for span in lines[0].spans]
    assert [s.color.triplet[0] for s in styles] == [0, 255]  # top pixel: foreground
    assert [s.bgcolor.triplet[0] for s in styles] == [10, 20]  # bottom pixel: background
    last = [span.style for span in lines[1].spans]
    assert [s.color.triplet[0] for s in last] == [30, 40]
    assert [s.bgcolor.triplet[0] for s in last] == [0, 0]  # padded with black


def test_terminal_preview_downsamples_wide_images() -> None:
    image = np.full((28, 100), 200, dtype=np.uint8)
    lines = terminal_preview(image, max_width=40)  # 100 -> 50 -> 25 wide, 28 -> 14 -> 7 tall
    assert len(lines) == math.ceil(7 / 2)
    assert all(len(line.plain) == 25 for line in lines)
