"""Image output without extra dependencies: grids, PNG files, labelled sheets and a terminal preview.

Images are numpy uint8 arrays, ``[N, H, W]`` (grayscale, 0 = black background).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import TinyDiffError
from .files import write_atomic


# How many times a picture meant for a person (the .png grid, the --gif animation, a notebook's grid) is
# upscaled: a 28-pixel digit becomes 112 pixels, about the size of a digit written on paper on a
# 96-dpi screen, and the 16 images of a default grid make 488 x 488 pixels, which fit a notebook cell,
# a README and a 1366 x 768 laptop screen whole. Integer nearest neighbour keeps each of the model's
# pixels a sharp square, with no blur. Arrays (.npz, one PNG per image) stay at the model's size.
DISPLAY_SCALE = 4


def grid_shape(n: int, h: int, w: int, *, nrow: int | None = None, padding: int = 2, gap: int | None = None) -> tuple[int, int]:
    """The ``(height, width)`` of :func:`make_grid`'s tiling of ``n`` images of ``h x w``: ``ceil(sqrt(n))`` per row by default."""
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / nrow))
    gap = column_gap(h, w, padding) if gap is None else gap
    return rows * (h + padding) + padding, nrow * (w + gap) + gap


def column_gap(h: int, w: int, padding: int) -> int:
    """Columns of digits are ``padding`` apart; wide images (numbers, over 1.5x as wide as high) half a digit apart, so that two
    numbers side by side read as two numbers, not one long one."""
    return padding if 2 * w <= 3 * h else max(padding, h // 2)


def make_grid(
    images: np.ndarray, *, nrow: int | None = None, padding: int = 2, pad_value: int = 0, gap: int | None = None
) -> np.ndarray:
    """Tile ``[N, H, W]`` images into one ``[rows*(H+p)+p, nrow*(W+g)+g]`` image, row by row.

    ``g``, the space between columns, is ``gap`` if given, else :func:`column_gap`.
    """
    n, h, w = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    gap = column_gap(h, w, padding) if gap is None else gap
    grid = np.full(grid_shape(n, h, w, nrow=nrow, padding=padding, gap=gap), pad_value, dtype=np.uint8)
    for k in range(n):
        r, c = divmod(k, nrow)
        y, x = padding + r * (h + padding), gap + c * (w + gap)
        grid[y : y + h, x : x + w] = images[k]
    return grid


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of a ``[H, W]`` image: each pixel becomes a ``scale x scale`` square."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise TinyDiffError(f"scale must be a whole number, 1 or more, got {scale!r}")
    return image if scale == 1 else np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)


def encode_png(image: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG (ISO/IEC 15948) of a ``[H, W]`` uint8 array."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = image.shape
    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))  # filter type 0 per row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    # zlib's default level 6: level 9 took 10x longer on an upscaled grid (32 ms for 488 x 488) for a file 7% smaller
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def decode_png(data: bytes) -> np.ndarray:
    """Read back a PNG written by :func:`encode_png` (8-bit grayscale, filter 0) for tests and tools."""
    pos, idat, size = 8, b"", (0, 0)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    w, h = size
    rows = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, w + 1)
    return rows[:, 1:].copy()


def save_png(path: str | Path, image: np.ndarray) -> None:
    write_atomic(path, encode_png(image))


# A 3x5 pixel font for labels: the evolution sheet's step numbers, the denoising animation's step and
# noise level. Digits, capital letters, 'k' (as in 20k) and . / - = :
_FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111", "3": "111001111001111",
    "4": "101101111001001", "5": "111100111001111", "6": "111100111101111", "7": "111001010010010",
    "8": "111101111101111", "9": "111101111001111", "k": "100101110101101", " ": "000000000000000",
    "A": "010101111101101", "B": "110101110101110", "C": "011100100100011", "D": "110101101101110",
    "E": "111100110100111", "F": "111100110100100", "G": "011100101101011", "H": "101101111101101",
    "I": "111010010010111", "J": "001001001101010", "K": "101101110101101", "L": "100100100100111",
    "M": "101111111101101", "N": "110101101101101", "O": "010101101101010", "P": "110101110100100",
    "Q": "010101101110011", "R": "110101110101101", "S": "011100010001110", "T": "111010010010010",
    "U": "101101101101111", "V": "101101101101010", "W": "101101111111101", "X": "101101010101101",
    "Y": "101101010010010", "Z": "111001010100111", ".": "000000000000010", "/": "001001010100100",
    "-": "000000111000000", "=": "000111000111000", ":": "000010000010000",
}  # fmt: skip


def render_text(text: str, *, scale: int = 2, value: int = 255) -> np.ndarray:
    """Draw text with the 3x5 font (digits, capitals, 'k', ``./-=:``; anything else is blank): a small label image."""
    glyphs = [np.array([int(b) for b in _FONT.get(ch, _FONT[" "])], dtype=np.uint8).reshape(5, 3) for ch in text]
    spaced = [np.pad(g, ((0, 0), (0, 1))) for g in glyphs]
    img = np.concatenate(spaced, axis=1)[:, :-1] * value
    return np.kron(img, np.ones((scale, scale), dtype=np.uint8))


def step_label(step: int) -> str:
    return f"{step // 1000}k" if step >= 10_000 and step % 1000 == 0 else str(step)


def evolution_sheet(snapshots: Sequence[tuple[int, np.ndarray]], *, max_columns: int = 8, gap: int = 6) -> np.ndarray:
    """Snapshot grids side by side, each under its step number: how the model grew."""
    if len(snapshots) > max_columns:  # keep the first and last, evenly spaced between
        picks = np.linspace(0, len(snapshots) - 1, max_columns).round().astype(int)
        snapshots = [snapshots[i] for i in sorted(set(picks))]
    h = max(grid.shape[0] for _, grid in snapshots)
    label_h = 14
    columns = []
    for step, grid in snapshots:
        col = np.zeros((label_h + h, grid.shape[1]), dtype=np.uint8)
        label = render_text(step_label(step))[:, : grid.shape[1]]
        x = (grid.shape[1] - label.shape[1]) // 2
        col[2 : 2 + label.shape[0], x : x + label.shape[1]] = label
        col[label_h : label_h + grid.shape[0]] = grid
        columns.append(col)
        columns.append(np.full((label_h + h, gap), 64, dtype=np.uint8))
    return np.concatenate(columns[:-1], axis=1)


def terminal_preview(image: np.ndarray, *, max_width: int = 80) -> "list":
    """Rich ``Text`` lines drawing an image with half blocks: each character is two pixels tall."""
    from rich.style import Style
    from rich.text import Text

    while image.shape[1] > max_width and image.shape[1] >= 4:
        h, w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        image = image[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)).astype(np.uint8)
    if image.shape[0] % 2:
        image = np.pad(image, ((0, 1), (0, 0)))
    lines = []
    for y in range(0, image.shape[0], 2):
        line = Text()
        for top, bottom in zip(image[y], image[y + 1]):
            line.append("▀", Style(color=f"rgb({top},{top},{top})", bgcolor=f"rgb({bottom},{bottom},{bottom})"))
        lines.append(line)
    return lines
