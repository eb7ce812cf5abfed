"""The comparison report: self-contained HTML that a real headless browser renders with its plots and images."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tinydiff.cli import app
from tinydiff.compare import compare_runs
from tinydiff.report import sample_grids

runner = CliRunner()
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
PLOT_COLOURS = {"first run (C0)": (31, 119, 180), "second run (C1)": (255, 127, 14)}  # matplotlib's first two line colours


@pytest.fixture(scope="module")
def report(tiny_sweep, tmp_path_factory) -> tuple[Path, Path]:
    """`tinydiff compare SWEEP --out report.html --images pictures/`: the report and its pictures."""
    root = tmp_path_factory.mktemp("report")
    result = runner.invoke(app, ["compare", str(tiny_sweep), "--out", str(root / "report.html"), "--images",
                                 str(root / "pictures"), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"wrote {root / 'report.html'}" in result.stderr
    return root / "report.html", root / "pictures"


def test_the_report_is_one_self_contained_file(report) -> None:
    page = report[0].read_text(encoding="utf-8")
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 1 + 1 + 2 + 2, "loss plot, eval plot, a sample grid and an evolution sheet per run"
    assert all(s.startswith("data:image/png;base64,") for s in sources), "every image is embedded: the page opens offline"
    assert "http://" not in page and "https://" not in page and "<script" not in page and "<link" not in page
    assert "schedule.name" in page and "linear" in page and "cosine" in page
    assert sorted(p.name for p in report[1].iterdir()) == ["cosine-evolution.png", "cosine-samples.png", "eval.png",
                                                           "linear-evolution.png", "linear-samples.png", "loss.png"]  # fmt: skip


def test_samples_come_from_the_same_noise_and_prompts_for_every_run(tiny_sweep, tmp_path) -> None:
    twin = tmp_path / "twin"
    shutil.copytree(tiny_sweep / "linear", twin)
    comparison = compare_runs([tiny_sweep / "linear", twin, tiny_sweep / "cosine"])
    grids = sample_grids(comparison, num=20, seed=3, steps=4)
    assert grids["linear"].shape == (2 * 30 + 2, 10 * 30 + 2), "ten to a row: one column per digit"
    assert np.array_equal(grids["linear"], grids["twin"]), "the same weights draw the same grid: same noise, same prompts"
    assert not np.array_equal(grids["linear"], grids["cosine"])
    assert not np.array_equal(grids["linear"], sample_grids(comparison, num=20, seed=4, steps=4)["linear"])


def screenshot(page: Path, png: Path) -> np.ndarray:
    """The page as Chromium draws it (headless, offline, a throwaway profile): RGB pixels."""
    from PIL import Image

    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={png.parent / 'profile'}", f"--screenshot={png}", "--window-size=1280,2400", page.as_uri()]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]
    with Image.open(png) as image:
        return np.asarray(image.convert("RGB")).astype(np.int16)


def what_rendered(pixels: np.ndarray) -> dict[str, int]:
    """Pixels of each plot line colour, and screen rows crossed by a sample grid's black padding (600+ black pixels in a row)."""
    found = {name: int((np.abs(pixels - colour).sum(-1) < 60).sum()) for name, colour in PLOT_COLOURS.items()}
    black = (pixels.max(-1) <= 8).astype(np.int8)  # page text is #222, never pure black; the grids' padding is
    longest = np.zeros(len(black), dtype=int)
    run = np.zeros(len(black), dtype=int)
    for column in black.T:
        run = (run + 1) * column
        longest = np.maximum(longest, run)
    found["grid padding rows"] = int((longest >= 580).sum())  # a grid of 10 samples is 604 px wide at 2x; the plots' axes are narrower
    return found


def test_the_report_renders_in_a_headless_browser_with_its_plots_and_images(report, tmp_path) -> None:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed; .ci/run installs it (apt-get install chromium) before the tests")
        pytest.skip("Chromium is not installed here (apt-get install chromium); CI installs it and runs this test")
    seen = what_rendered(screenshot(report[0], tmp_path / "report.png"))
    assert seen["first run (C0)"] > 300 and seen["second run (C1)"] > 300, f"the loss and eval plots: {seen}"
    assert seen["grid padding rows"] >= 6, f"both sample grids (3 padding rows of 2x2 pixels each): {seen}"

    # the same page with its images broken: the check must see the difference
    page = report[0].read_text(encoding="utf-8").replace("base64,", "base64,broken")
    (tmp_path / "broken.html").write_text(page, encoding="utf-8")
    empty = what_rendered(screenshot(tmp_path / "broken.html", tmp_path / "broken.png"))
    assert max(empty.values()) < 50, f"nothing drawn when the images cannot load: {empty}"
