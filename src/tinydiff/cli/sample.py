"""``tinydiff sample``: draw images from a model and write a grid, a folder of PNGs or an .npz."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from ..config import SampleConfig
from ..errors import TinyDiffError
from .output import console, err_console, handles_errors


@dataclass
class OutputPlan:
    """Where and how ``--out`` is written, checked before any sampling."""

    kind: str  # "grid", "npz" or "folder"
    path: Path


def plan_output(out: str) -> OutputPlan:
    """``*.png``: one grid; ``*.npz``: arrays; an existing or ``/``-ended directory: one PNG per image."""
    path = Path(out).expanduser()
    if out.endswith(("/", os.sep)) or path.is_dir():
        parent = path.parent if not path.is_dir() else path
        if not parent.is_dir():
            raise TinyDiffError(f"--out {out!r}: directory {str(parent)!r} does not exist; create it first")
        return OutputPlan("folder", path)
    suffix = path.suffix.lower()
    kinds = {".png": "grid", ".npz": "npz"}
    if suffix not in kinds:
        raise TinyDiffError(
            f"--out {out!r} has an unsupported extension; use a .png file (one grid), "
            "a .npz file, or a directory ending in '/' (one PNG per image)"
        )
    parent = path.parent
    if not parent.is_dir():
        raise TinyDiffError(f"--out {out!r}: directory {str(parent)!r} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK):
        raise TinyDiffError(f"--out {out!r}: directory {str(parent)!r} is not writable")
    return OutputPlan(kinds[suffix], path)


def write_output(plan: OutputPlan, images: Any, *, nrow: int | None = None) -> None:
    """Write uint8 ``[N, H, W]`` images as the plan says, never leaving a half-written file."""
    import numpy as np

    from ..images import encode_png, make_grid, save_png, write_atomic

    if plan.kind == "grid":
        save_png(plan.path, make_grid(images, nrow=nrow))
    elif plan.kind == "npz":
        buffer = io.BytesIO()
        np.savez(buffer, images=images)
        write_atomic(plan.path, buffer.getvalue())
    elif plan.path.is_dir():
        for i, image in enumerate(images):
            save_png(plan.path / f"{i:04d}.png", image)
    else:  # a new folder: fill a temporary sibling, then rename it into place
        tmp = Path(tempfile.mkdtemp(dir=plan.path.parent, prefix=f".{plan.path.name}."))
        try:
            for i, image in enumerate(images):
                (tmp / f"{i:04d}.png").write_bytes(encode_png(image))
            os.rename(tmp, plan.path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


@handles_errors
def sample_command(
    model: Optional[str] = typer.Option(None, "--model", help="Run directory, model folder or bundled model name."),
    num: int = typer.Option(16, "--num", help="How many images."),
    sampler: str = typer.Option("ddpm", "--sampler", help="Sampler name (see `tinydiff plugins --all`)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (default: all of the model's T)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same images (on CPU)."),
    out: str = typer.Option("samples.png", "--out", help="*.png grid, *.npz arrays, or a directory/ of PNGs."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps (same seed, same images on CPU)."),
    no_preview: bool = typer.Option(False, "--no-preview", help="Do not draw the grid in the terminal."),
) -> None:
    """Sample images from a trained model."""
    settings = SampleConfig(num=num, sampler=sampler, steps=steps, seed=seed, device=device)
    plan = plan_output(out)

    from ..pipeline import Pipeline
    from ..plugins import get_sampler

    get_sampler(settings.sampler)  # unknown names fail before the model loads
    pipe = Pipeline.from_ref(model, device=settings.device)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"[bold]{settings.sampler}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("sample", total=None)

        def on_step(info: dict[str, Any]) -> None:
            progress.update(task, completed=info["i"], total=info["total"])

        images = pipe.sample(settings.num, seed=settings.seed, sampler=settings.sampler, steps=settings.steps, callback=on_step)
    images = images.numpy()
    write_output(plan, images)
    if not no_preview:
        from ..images import make_grid, terminal_preview

        for line in terminal_preview(make_grid(images), max_width=max(20, console.width)):
            console.print(line)
    what = {"grid": "a grid", "npz": "an .npz", "folder": "one PNG each"}[plan.kind]
    err_console.print(f"wrote {settings.num} images ({what}) to {plan.path}")
