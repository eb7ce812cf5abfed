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

from ..config import SampleConfig, parse_guidance_interval, sampling_defaults
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


def check_prompt(prompt: str, tokenizer: Any) -> str:
    """Clean one prompt and say what will happen to it: the prompt actually sampled from."""
    from ..captions import digits_in_prompt, style_in_prompt

    cleaned = " ".join("".join(ch if ch.isprintable() else " " for ch in prompt).split())  # drop control characters
    style_in_prompt(cleaned)  # contradictions such as "thin and bold" are an error
    digits = sorted(digits_in_prompt(cleaned))
    if len(digits) > 1:
        raise TinyDiffError(
            f"prompt {cleaned[:60]!r} names the digits {', '.join(map(str, digits))}; an image holds one digit, "
            "so ask for one (or use --prompts-file, one prompt a line)"
        )
    if cleaned and not digits:
        warning_line(f"prompt {cleaned[:60]!r} names no digit; sampling unconditionally")
        return ""
    batch = tokenizer.encode([cleaned])
    if batch.unknown[0]:
        warning_line(f"unknown words, read as an unknown token: {', '.join(batch.unknown[0][:10])}")
    if batch.truncated[0]:
        warning_line(f"prompt is longer than the text encoder's {tokenizer.max_length - 1} words; the rest is ignored")
    return cleaned


def write_output(plan: OutputPlan, images: Any, *, nrow: int | None = None, prompts: list[str] | None = None) -> None:
    """Write uint8 ``[N, H, W]`` images as the plan says, never leaving a half-written file."""
    import numpy as np

    from ..images import encode_png, make_grid, save_png, write_atomic

    if plan.kind == "grid":
        save_png(plan.path, make_grid(images, nrow=nrow))
    elif plan.kind == "npz":
        buffer = io.BytesIO()
        arrays = {"images": images} | ({"prompts": np.array(prompts, dtype=np.str_)} if prompts is not None else {})
        np.savez(buffer, **arrays)
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
    prompt: Optional[str] = typer.Argument(None, help="What to draw, e.g. \"a handwritten seven\" (text models)."),
    prompts_file: Optional[Path] = typer.Option(None, "--prompts-file", help="One prompt a line; --num images each."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance weight (1: none)."),
    guidance_interval: Optional[str] = typer.Option(None, "--guidance-interval", help="Noise levels LO,HI (sigma) where guidance applies, or 'all' (default: 0.28,5.42)."),
    model: Optional[str] = typer.Option(None, "--model", help="Run directory, model folder or bundled model name."),
    num: int = typer.Option(16, "--num", help="How many images."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="Sampler name (default: dpm++, chosen by measurement; see docs/cli.md)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (default: the sampler's: ddpm all T, ddim 50, dpm++ 10)."),
    seed: int = typer.Option(0, "--seed", help="Same seed, same images (on CPU)."),
    out: str = typer.Option("samples.png", "--out", help="*.png grid, *.npz arrays, or a directory/ of PNGs."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or mps (same seed, same images on CPU)."),
    no_preview: bool = typer.Option(False, "--no-preview", help="Do not draw the grid in the terminal."),
) -> None:
    """Sample images from a trained model; text models draw what PROMPT says."""
    sampler, steps = sampling_defaults(sampler, steps)
    settings = SampleConfig(num=num, sampler=sampler, steps=steps, seed=seed, device=device)
    interval = parse_guidance_interval(guidance_interval)
    if prompt is not None and prompts_file is not None:
        raise TinyDiffError("give either PROMPT or --prompts-file, not both")
    asked = read_prompts_file(prompts_file) if prompts_file is not None else ([prompt] if prompt is not None else None)
    plan = plan_output(out)

    with importing_torch():
        from ..pipeline import DEFAULT_GUIDANCE, Pipeline
        from ..plugins import get_sampler

    get_sampler(settings.sampler)  # unknown names fail before the model loads
    pipe = Pipeline.from_ref(model, device=settings.device)
    prompts = None
    if asked is not None:
        if not pipe.is_text_model:
            raise TinyDiffError("this model is unconditional: it takes no prompt; drop the prompt or pick a text model")
        tokenizer = pipe.model.text_encoder.tokenizer
        prompts = [p for p in (check_prompt(a, tokenizer) for a in asked) for _ in range(settings.num)]
    total = len(prompts) if prompts is not None else settings.num
    if total > 4096:
        raise TinyDiffError(f"{total} images asked for ({settings.num} for each of {len(asked or [])} prompts); 4096 at most")
    if guidance is not None and guidance < 0:
        raise TinyDiffError(f"--guidance must be 0 or more, got {guidance}")
    if (guidance is not None or guidance_interval is not None) and prompts is None:
        warning_line("--guidance and --guidance-interval have no effect without a prompt")

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"[bold]{settings.sampler}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("sample", total=None)

        def on_step(info: dict[str, Any]) -> None:
            progress.update(task, completed=info["i"], total=info["total"])

        images = pipe.sample(
            total, prompts=prompts, guidance=DEFAULT_GUIDANCE if guidance is None else guidance, guidance_interval=interval,
            seed=settings.seed, sampler=settings.sampler, steps=settings.steps, callback=on_step,
        )  # fmt: skip
    images = images.numpy()
    nrow = settings.num if asked is not None and len(asked) > 1 else None  # one grid row per prompt
    write_output(plan, images, nrow=nrow, prompts=prompts)
    if not no_preview:
        from ..images import make_grid, terminal_preview

        for line in terminal_preview(make_grid(images, nrow=nrow), max_width=max(20, console.width)):
            console.print(line)
    what = {"grid": "a grid", "npz": "an .npz", "folder": "one PNG each"}[plan.kind]
    err_console.print(f"wrote {total} images ({what}) to {plan.path}")
    allow_fast_exit()  # every file is written and closed
