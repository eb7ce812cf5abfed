"""``tinydiff eval``: sample each digit and score the model with the shipped classifier."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from ..errors import TinyDiffError
from .options import Device, Spacing, complete_names, finite_float, names_help, registry_name
from .output import allow_fast_exit, console, handles_errors, importing_torch, progress_bar

MAX_NUM_PER_DIGIT = 1000  # 10,000 images: as many as MNIST's test set, the reference of the figures


@handles_errors
def eval_command(
    model: Optional[str] = typer.Option(None, "--model", help="Run directory, model folder or bundled model name."),
    num_per_digit: int = typer.Option(100, "--num-per-digit", min=2, max=MAX_NUM_PER_DIGIT, help="Images sampled for each digit."),
    sampler: Optional[str] = typer.Option(None, "--sampler", parser=registry_name("sampler"), autocompletion=complete_names("sampler"),
                                          help=f"Sampler: {names_help('sampler')} (default: tinydiff sample's)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampler steps (default: the sampler's)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", parser=finite_float, help="Classifier-free guidance weight (text models)."),
    guidance_interval: Optional[str] = typer.Option(None, "--guidance-interval", help="Noise levels LO,HI (sigma) where guidance applies, or 'all' (default: 0.28,5.42)."),
    spacing: Optional[Spacing] = typer.Option(None, "--spacing", help="Timesteps the sampler visits (default: the sampler's; docs/cli.md)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first batch."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Folder holding MNIST/raw (the test set is the reference)."),
    device: Device = typer.Option("auto", "--device", help="Where to sample."),
    style: bool = typer.Option(False, "--style", help="Also measure style words: bold/thin ink, leaning right/left slant, large/small extent."),
    numbers: bool = typer.Option(False, "--numbers", help="Score whole numbers instead: each digit cut out of its canvas and read, by length and position."),
    lengths: str = typer.Option("2,4,6", "--lengths", help="With --numbers: the number lengths to draw, comma-separated."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Score a model: prompt accuracy per digit, MNIST-FD beside the real-data floor, speed."""
    from ..config import parse_guidance_interval

    interval = parse_guidance_interval(guidance_interval)
    number_lengths = parse_lengths(lengths) if numbers else None
    if style and numbers:
        raise TinyDiffError("--style and --numbers are separate evaluations; run one, then the other")
    with importing_torch():
        from ..evaluate import evaluate_pipeline, style_report
        from ..pipeline import Pipeline

    pipe = Pipeline.from_ref(model, device=device)
    given = {"sampler": sampler, "steps": steps, "guidance": guidance, "guidance_interval": interval, "spacing": spacing}
    pipe.options(**given)  # checked before any work
    if style and not pipe.is_text_model:
        raise TinyDiffError("--style needs a text model; this one is unconditional (drop --style)")
    if number_lengths is not None:
        return numbers_command(pipe, number_lengths, num_per_digit, seed, data_dir, given, as_json)

    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    with progress_bar(TextColumn("[bold]eval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True) as progress:
        task = progress.add_task("eval", total=10 * num_per_digit)

        def on_batch(info: dict[str, Any]) -> None:
            progress.update(task, completed=info["done"])

        report = evaluate_pipeline(pipe, num_per_digit=num_per_digit, seed=seed, data_dir=data_dir, callback=on_batch, **given)
        if style:
            progress.update(task, description="style")
            report["style"] = style_report(pipe, num_per_digit=max(1, num_per_digit // 2), seed=seed, **given)
    allow_fast_exit()  # eval writes no file; stdout is flushed on the way out
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{report['model']}: {report['num_images']} images, {report['sampler']}, "
                  f"{report['nfe']} network evaluations each, {report['seconds']:.1f} s")  # fmt: skip
    table.add_column("figure")
    table.add_column("value", justify="right")
    if report["conditional"]:
        table.add_row("prompt accuracy", f"{report['accuracy']:.1%}")
        for digit, acc in report["per_digit_accuracy"].items():
            table.add_row(f"  digit {digit}", f"{acc:.1%}")
        gi = report["guidance_interval"]
        where = f" at sigma in ({gi[0]:g}, {gi[1]:g}]" if gi else " at every step"
        table.add_row("guidance", f"{report['guidance']:g}{where}")
    table.add_row("MNIST-FD", f"{report['mnist_fd']:.2f}")
    table.add_row("real-data floor at this N", f"{report['mnist_fd_floor']:.2f}")
    table.add_row("ratio to the floor", f"{report['fd_ratio']:.2f}x")
    table.add_row("classifier confidence", f"{report['confidence']:.1%}")
    table.add_row("class histogram", " ".join(str(c) for c in report["class_histogram"]))
    if "style" in report:
        st = report["style"]
        table.add_row("ink, bold / thin", f"{st['bold_thin_ink_ratio']:.2f}x")
        table.add_row("slant, leaning right / left", f"{st['slant_right']:+.3f} / {st['slant_left']:+.3f}")
        table.add_row("extent, large / small", f"{st['large_small_extent_ratio']:.2f}x")
    console.print(table)


def parse_lengths(text: str) -> list[int]:
    """``--lengths 2,4,6``: whole numbers of digits, each from 2 to the longest number a prompt may name."""
    from ..prompts import MAX_NUMBER_DIGITS

    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or not all(part.isdigit() and 2 <= int(part) <= MAX_NUMBER_DIGITS for part in parts):
        raise TinyDiffError(f"--lengths {text!r}: give number lengths from 2 to {MAX_NUMBER_DIGITS} digits, comma-separated, e.g. 2,4,6")
    return [int(part) for part in parts]


def numbers_command(pipe: Any, lengths: list[int], num_per_digit: int, seed: int, data_dir: Optional[str],
                    given: dict[str, Any], as_json: bool) -> None:  # fmt: skip
    """``tinydiff eval --numbers``: digit accuracy of whole numbers by length and position, cut-out MNIST-FD, time."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from ..evaluate import evaluate_numbers

    if not pipe.is_text_model:
        raise TinyDiffError("--numbers needs a text model: numbers are drawn from prompts; this one is unconditional")
    with progress_bar(TextColumn("[bold]eval --numbers"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=True) as progress:  # fmt: skip
        task = progress.add_task("numbers", total=None)
        report = evaluate_numbers(pipe, lengths=lengths, num_per_digit=num_per_digit, seed=seed, data_dir=data_dir,
                                  callback=lambda info: progress.update(task, completed=info["done"], total=info["total"]),
                                  **given)  # fmt: skip
    allow_fast_exit()
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{report['model']}: whole numbers, {report['digits']} digits, {report['sampler']}")
    for column in ("digits", "numbers", "digit accuracy", "by position", "numbers right", "time vs 1 digit", "vs k digits"):
        table.add_column(column, justify="right")
    for k, row in report["lengths"].items():
        positions = " ".join(f"{a:.0%}" for a in row["accuracy_by_position"])
        table.add_row(k, str(row["numbers"]), f"{row['digit_accuracy']:.1%}", positions, f"{row['numbers_right']:.1%}",
                      f"{row['time_vs_single_digit']:.2f}x", f"{row['time_vs_k_single_digits']:.2f}x")  # fmt: skip
    console.print(table)
    console.print(f"digit accuracy {report['digit_accuracy']:.1%} (the same digits sampled alone: {report['single_digit_accuracy']:.1%})")
    console.print(f"MNIST-FD of the cut-out digits {report['mnist_fd_cut_out']:.2f}, of single digits {report['mnist_fd_single']:.2f} "
                  f"({report['mnist_fd_ratio']:.2f}x); real-data floor {report['mnist_fd_floor']:.2f}")  # fmt: skip
