"""docs/tutorial.md runs as written, top to bottom, and writes the pictures the page shows."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, read_gif

PAGE = REPO / "docs" / "tutorial.md"
PICTURES = REPO / "docs" / "images" / "tutorial"


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def run_page(folder: Path) -> dict:
    """Execute every ``python`` block of the page in one namespace, in ``folder``, as a notebook would."""
    namespace: dict = {"__name__": "__tutorial__"}
    for block in code_blocks(PAGE.read_text(encoding="utf-8")):
        exec(compile(block, str(PAGE), "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def page_run(tmp_path_factory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("tutorial")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        namespace = run_page(folder)
    return folder, namespace


def test_the_tutorial_calls_the_pipeline_as_a_notebook_user_would(page_run) -> None:
    blocks = "\n".join(code_blocks(PAGE.read_text(encoding="utf-8")))
    assert 'pipe("a handwritten seven", num_images=4)' in blocks and "trajectory=True" in blocks
    _, ns = page_run
    assert ns["out"].images.shape == (4, 28, 28) and ns["out"].seed == 7
    assert ns["path"].steps == 10 and tuple(ns["path"].x_t.shape) == (11, 1, 28, 28)
    assert ns["ddpm"].trajectory.steps == 50


def test_every_picture_on_the_page_is_what_its_code_writes(page_run) -> None:
    folder, ns = page_run
    shown = re.findall(r"\]\(images/tutorial/([\w.-]+)\)", PAGE.read_text(encoding="utf-8"))
    assert sorted(shown) == sorted(p.name for p in PICTURES.iterdir()) and len(shown) == 5
    on_cpu = ns["pipe"].device.type == "cpu"  # another device draws other images from the same seed
    for name in shown:
        if name.endswith(".gif"):
            (a, times), (b, committed_times) = read_gif((folder / name).read_bytes()), read_gif((PICTURES / name).read_bytes())
            assert times == committed_times
        else:
            a, b = read_png(folder / name), read_png(PICTURES / name)
        assert a.shape == b.shape, name
        if on_cpu:  # other CPUs sum in another order: a grey level or two apart, as in test_reference.py
            diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
            assert diff.max() <= 8 and diff.mean() < 0.25, (name, int(diff.max()), float(diff.mean()))
