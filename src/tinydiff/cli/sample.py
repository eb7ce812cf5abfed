"""``tinydiff sample``: draw images from a model and write a grid, a folder of PNGs or an .npz."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from ..config import SamplingOptions, parse_guidance_interval
from ..errors import TinyDiffError
from .output import allow_fast_exit, console, err_console, handles_errors, importing_torch, warning_line


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


def read_prompts_file(path: Path) -> list[str]:
    """One prompt a line; blank lines are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TinyDiffError(f"--prompts-file {str(path)!r} does not exist") from None
    except UnicodeDecodeError:
        raise TinyDiffError(f"--prompts-file {str(path)!r} is not UTF-8 text; save it as UTF-8") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise TinyDiffError(f"--prompts-file {str(path)!r} holds no prompt; write one prompt a line")
    return prompts


def write_output(plan: OutputPlan, images: Any, *, nrow: int | None = None, prompts: list[str] | None = None) -> None:
    """Write uint8 ``[N, H, W]`` images as the plan says, never leaving a half-written file."""
    import numpy as np

    from ..files import write_atomic, write_files_atomic, write_folder_atomic
    from ..images import encode_png, make_grid, save_png

    if plan.kind == "grid":
        save_png(plan.path, make_grid(images, nrow=nrow))
    elif plan.kind == "npz":
        buffer = io.BytesIO()
        arrays = {"images": images} | ({"prompts": np.array(prompts, dtype=np.str_)} if prompts is not None else {})
        np.savez(buffer, **arrays)
        write_atomic(plan.path, buffer.getvalue())
    else:  # one PNG each: all of them appear, or none does
        files = {f"{i:04d}.png": encode_png(image) for i, image in enumerate(images)}
        (write_files_atomic if plan.path.is_dir() else write_folder_atomic)(plan.path, files)


DEFAULTS = SamplingOptions()


@handles_errors
def sample_command(
    prompt: Optional[str] = typer.Argument(None, help="What to draw, e.g. \"a handwritten seven\" (text models)."),
    prompts_file: Optional[Path] = typer.Option(None, "--prompts-file", help="One prompt a line; --num images each."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help=f"Classifier-free guidance weight (1: none; default {DEFAULTS.guidance:g})."),
    guidance_interval: Optional[str] = typer.Option(None, "--guidance-interval", help="Noise levels LO,HI (sigma) where guidance applies, or 'all' (default: {},{}).".format(*DEFAULTS.guidance_interval)),
    model: Optional[str] = typer.Option(None, "--model", help="Run directory, model folder or bundled model name."),
    num: int = typer.Option(16, "--num", min=1, max=4096, help="How many images (for each prompt)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help=f"Sampler name (default: {DEFAULTS.sampler}, chosen by measurement; see docs/cli.md)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Sampler steps (default: the sampler's: ddpm all T, ddim 50, dpm++ 10)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Same seed, same images (on CPU)."),
    out: str = typer.Option("samples.png", "--out", help="*.png grid, *.npz arrays, or a directory/ of PNGs."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps (same seed, same images on CPU)."),
    no_preview: bool = typer.Option(False, "--no-preview", help="Do not draw the grid in the terminal."),
) -> None:
    """Sample images from a trained model; text models draw what PROMPT says."""
    interval = parse_guidance_interval(guidance_interval)
    if prompt is not None and prompts_file is not None:
        raise TinyDiffError("give either PROMPT or --prompts-file, not both")
    asked = read_prompts_file(prompts_file) if prompts_file is not None else ([prompt] if prompt is not None else None)
    plan = plan_output(out)

    with importing_torch():
        from ..pipeline import Pipeline

    pipe = Pipeline.from_ref(model, device=device)
    opts = pipe.options(sampler=sampler, steps=steps, guidance=guidance, guidance_interval=interval)  # checked before any work
    prompts = None
    if asked is not None:
        prompts = [p for p in pipe.check_prompts(asked) for _ in range(num)]
    total = len(prompts) if prompts is not None else num
    if total > 4096:
        raise TinyDiffError(f"{total} images asked for ({num} for each of {len(asked or [])} prompts); 4096 at most")
    if (guidance is not None or guidance_interval is not None) and prompts is None:
        warning_line("--guidance and --guidance-interval have no effect without a prompt")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"[bold]{opts.sampler}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("sample", total=None)

        def on_step(info: dict[str, Any]) -> None:
            progress.update(task, completed=info["i"], total=info["total"])

        images = pipe.sample(total, prompts=prompts, seed=seed, sampler=sampler, steps=steps, guidance=guidance,
                             guidance_interval=interval, callback=on_step)  # fmt: skip
    images = images.numpy()
    nrow = num if asked is not None and len(asked) > 1 else None  # one grid row per prompt
    write_output(plan, images, nrow=nrow, prompts=prompts)
    if not no_preview:
        from ..images import make_grid, terminal_preview

        for line in terminal_preview(make_grid(images, nrow=nrow), max_width=max(20, console.width)):
            console.print(line)
    what = {"grid": "a grid", "npz": "an .npz", "folder": "one PNG each"}[plan.kind]
    err_console.print(f"wrote {total} images ({what}) to {plan.path}")
    allow_fast_exit()  # every file is written and closed
