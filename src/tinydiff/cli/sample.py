"""``tinydiff sample``: draw images from a model and write a grid, a folder of PNGs or an .npz, and the denoising GIF."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from ..config import SamplingOptions, parse_guidance_interval
from ..errors import TinyDiffError
from ..images import DISPLAY_SCALE
from .options import Device, Spacing, complete_names, finite_float, names_help, registry_name
from .output import (
    allow_fast_exit,
    err_console,
    handles_errors,
    importing_torch,
    preview_console,
    progress_bar,
    stdout_closed,
    warning_line,
)


@dataclass
class OutputPlan:
    """Where and how ``--out`` is written, checked before any sampling."""

    kind: str  # "grid", "npz" or "folder"
    path: Path


def check_parent(option: str, value: str, path: Path) -> None:
    """The folder a file option writes into must exist and be writable."""
    parent = path.parent
    if not parent.is_dir():
        raise TinyDiffError(f"{option} {value!r}: directory {str(parent)!r} does not exist; create it or choose another path")
    if not os.access(parent, os.W_OK):
        raise TinyDiffError(f"{option} {value!r}: directory {str(parent)!r} is not writable")


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
    check_parent("--out", out, path)
    return OutputPlan(kinds[suffix], path)


def plan_gif(gif: str) -> Path:
    """``--gif``: a ``.gif`` file in a writable folder."""
    path = Path(gif).expanduser()
    if path.suffix.lower() != ".gif":
        raise TinyDiffError(f"--gif {gif!r} must name a .gif file, for example --gif denoising.gif")
    check_parent("--gif", gif, path)
    return path


# The largest .png grid written: 4096 images at the default scale (59 megapixels) fit, a 1 GB one does not
MAX_GRID_PIXELS = 1 << 26


def check_picture_sizes(
    plan: OutputPlan, gif: Path | None, *, total: int, size: int, nrow: int | None, scale: int, canvas: int | None = None
) -> None:
    """Refuse a grid or an animation too large to hold in memory, before any sampling; ``canvas``: the widest image."""
    from ..images import grid_shape

    canvas = canvas or size
    height, width = grid_shape(total, size * scale, canvas * scale, nrow=nrow, padding=2 * scale)
    if plan.kind == "grid" and height * width > MAX_GRID_PIXELS:
        raise TinyDiffError(
            f"--scale {scale} would make the grid of {total} images {width} x {height} pixels, more than "
            f"{MAX_GRID_PIXELS / 1e6:.0f} megapixels; lower --scale or --num"
        )
    if gif is not None:
        from ..animation import check_frame_size

        check_frame_size(total, size, canvas, nrow=nrow, scale=scale)


MAX_PROMPTS_BYTES = 1 << 20  # a prompts file of a megabyte is some 50,000 prompts, more than --num allows anyway


def read_prompts_file(path: Path) -> list[str]:
    """One prompt a line, blank lines skipped; ``-`` reads standard input. A regular file or a pipe, of at most a megabyte."""
    import stat
    import sys

    name = "standard input" if str(path) == "-" else repr(str(path))
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(MAX_PROMPTS_BYTES + 1)
        else:
            mode = path.stat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
                raise TinyDiffError(f"--prompts-file {name} is not a regular file; give a text file of prompts, or - for standard input")
            with open(path, "rb") as f:
                data = f.read(MAX_PROMPTS_BYTES + 1)
    except FileNotFoundError:
        raise TinyDiffError(f"--prompts-file {name} does not exist") from None
    except (OSError, AttributeError, ValueError) as exc:
        raise TinyDiffError(f"--prompts-file {name} cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    if len(data) > MAX_PROMPTS_BYTES:
        raise TinyDiffError(f"--prompts-file {name} holds more than {MAX_PROMPTS_BYTES >> 20} MB; give one prompt a line, a few thousand at most")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TinyDiffError(f"--prompts-file {name} is not UTF-8 text; save it as UTF-8") from None
    if "\x00" in text:
        raise TinyDiffError(f"--prompts-file {name} holds NUL bytes; it is not a text file of prompts")
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise TinyDiffError(f"--prompts-file {name} holds no prompt; write one prompt a line")
    return prompts


def write_output(
    plan: OutputPlan,
    images: Any,
    *,
    seed: int,
    nrow: int | None = None,
    prompts: list[str] | None = None,
    scale: int = DISPLAY_SCALE,
    widths: list[int] | None = None,
) -> None:
    """Write uint8 ``[N, H, W]`` images as the plan says (a grid upscaled ``scale`` times), never leaving a half-written file.

    ``widths``: each image's own canvas width, where whole numbers make some wider than others
    (narrower ones arrive centred on background): the .npz keeps them, a folder's PNGs are cut to them.
    """
    import numpy as np

    from ..files import write_atomic, write_files_atomic, write_folder_atomic
    from ..images import encode_png, make_grid, save_png, upscale

    if plan.kind == "grid":
        save_png(plan.path, upscale(make_grid(images, nrow=nrow), scale))
    elif plan.kind == "npz":
        buffer = io.BytesIO()
        arrays = {"images": images, "seed": np.int64(seed)}
        if prompts is not None:
            arrays["prompts"] = np.array(prompts, dtype=np.str_)
        if widths is not None and images.shape[-1] != images.shape[-2]:  # wide canvases: each image's own width
            arrays["widths"] = np.array(widths, dtype=np.int64)
        np.savez(buffer, **arrays)
        write_atomic(plan.path, buffer.getvalue())
    else:  # one PNG each: all of them appear, or none does
        widths = widths or [images.shape[-1]] * len(images)
        lefts = [(images.shape[-1] - w) // 2 for w in widths]
        files = {f"{i:04d}.png": encode_png(image[:, x : x + w]) for i, (image, x, w) in enumerate(zip(images, lefts, widths))}
        (write_files_atomic if plan.path.is_dir() else write_folder_atomic)(plan.path, files)


DEFAULTS = SamplingOptions()


@handles_errors
def sample_command(
    prompt: Optional[str] = typer.Argument(None, help="What to draw, e.g. \"a handwritten seven\" (text models)."),
    prompts_file: Optional[Path] = typer.Option(None, "--prompts-file", help="One prompt a line; --num images each; - reads standard input."),
    guidance: Optional[float] = typer.Option(None, "--guidance", parser=finite_float, help=f"Classifier-free guidance weight (1: none; default {DEFAULTS.guidance:g})."),
    guidance_interval: Optional[str] = typer.Option(None, "--guidance-interval", help="Noise levels LO,HI (sigma) where guidance applies, or 'all' (default: {},{}).".format(*DEFAULTS.guidance_interval)),
    model: Optional[str] = typer.Option(None, "--model", help="Run directory, model folder or bundled model name."),
    num: int = typer.Option(16, "--num", min=1, max=4096, help="How many images (for each prompt)."),
    sampler: Optional[str] = typer.Option(None, "--sampler", parser=registry_name("sampler"), autocompletion=complete_names("sampler"),
                                          help=f"Sampler: {names_help('sampler')} (default: {DEFAULTS.sampler}, chosen by measurement; see docs/cli.md)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Sampler steps (default: the sampler's: ddpm all T, ddim 50, dpm++ 10)."),
    spacing: Optional[Spacing] = typer.Option(None, "--spacing", help="Timesteps the steps visit (default: the sampler's; see docs/cli.md)."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Same seed, same images (on CPU); default: a fresh seed, printed."),
    out: str = typer.Option("samples.png", "--out", help="*.png grid, *.npz arrays, or a directory/ of PNGs."),
    gif: Optional[str] = typer.Option(None, "--gif", help="Also write the denoising as an animated GIF: x_t beside the predicted image, step by step."),
    scale: Optional[int] = typer.Option(None, "--scale", min=1, max=16, help=f"Upscale the .png grid and the --gif K times, pixels kept square (default {DISPLAY_SCALE})."),
    device: Device = typer.Option("auto", "--device", help="Where to sample (same seed, same images on CPU)."),
    no_preview: bool = typer.Option(False, "--no-preview", help="Do not draw the grid in the terminal (never drawn in a pipe, a file or with NO_COLOR)."),
) -> None:
    """Sample images from a trained model; text models draw what PROMPT says."""
    interval = parse_guidance_interval(guidance_interval)
    if prompt is not None and prompts_file is not None:
        raise TinyDiffError("give either PROMPT or --prompts-file, not both")
    asked = read_prompts_file(prompts_file) if prompts_file is not None else ([prompt] if prompt is not None else None)
    plan = plan_output(out)
    gif_path = plan_gif(gif) if gif is not None else None

    with importing_torch():
        from ..pipeline import Pipeline

    pipe = Pipeline.from_ref(model, device=device)
    opts = pipe.options(sampler=sampler, steps=steps, guidance=guidance, guidance_interval=interval, spacing=spacing)  # checked before any work
    prompts = None
    if asked is not None:
        prompts = [p for p in pipe.check_prompts(asked) for _ in range(num)]
    total = len(prompts) if prompts is not None else num
    if total > 4096:
        raise TinyDiffError(f"{total} images asked for ({num} for each of {len(asked or [])} prompts); 4096 at most")
    if (guidance is not None or guidance_interval is not None) and prompts is None:
        warning_line("--guidance and --guidance-interval have no effect without a prompt")
    size = pipe.config.model.image_size
    widths = pipe.canvas_widths(prompts, total)
    nrow = num if asked is not None and len(asked) > 1 else None  # one grid row per prompt
    if nrow is None and max(widths) > size:  # wide images: fewer a row, so the grid stays about square
        nrow = max(1, round((total * size / max(widths)) ** 0.5))
    check_picture_sizes(plan, gif_path, total=total, size=size, nrow=nrow, scale=scale or DISPLAY_SCALE, canvas=max(widths))
    if scale is not None and plan.kind != "grid" and gif_path is None:
        warning_line("--scale has no effect on an .npz or a folder of PNGs, which keep the model's pixels; it scales a .png grid and --gif")

    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    with progress_bar(
        TextColumn(f"[bold]{opts.sampler}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
    ) as progress:
        task = progress.add_task("sample", total=None)

        def on_step(info: dict[str, Any]) -> None:
            progress.update(task, completed=info["i"], total=info["total"])

        drawn = pipe.sample(total, prompts=prompts, seed=seed, sampler=sampler, steps=steps, guidance=guidance,
                            guidance_interval=interval, spacing=spacing, trajectory=gif_path is not None, callback=on_step)  # fmt: skip
    trajectory = drawn if gif_path is not None else None
    images = (trajectory.images if trajectory is not None else drawn).numpy()
    write_output(plan, images, seed=pipe.last_seed, nrow=nrow, prompts=prompts, scale=scale or DISPLAY_SCALE, widths=widths)
    screen = None if no_preview else preview_console()
    if screen is not None:
        from ..images import make_grid, terminal_preview

        try:
            for line in terminal_preview(make_grid(images, nrow=nrow), max_width=max(20, screen.width)):
                screen.print(line)
        except BrokenPipeError:  # `| head -1`: the files are written; the "wrote" line below still goes to stderr
            stdout_closed()
    what = {"grid": "a grid", "npz": "an .npz", "folder": "one PNG each"}[plan.kind]
    err_console.print(f"wrote {total} images ({what}) to {plan.path}")
    if trajectory is not None:
        trajectory.save_gif(gif_path, nrow=nrow, scale=scale or DISPLAY_SCALE)
        err_console.print(f"wrote the denoising, {trajectory.steps} steps, to {gif_path}")
    if seed is None:
        err_console.print(f"seed {pipe.last_seed}; rerun with --seed {pipe.last_seed} for the same images")
    allow_fast_exit()  # every file is written and closed
