"""``tinydiff compare``: runs side by side, as a table, as JSON, or as a self-contained HTML report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ..errors import TinyDiffError
from .output import console, err_console, handles_errors, importing_torch


def print_comparison(comparison: dict[str, Any]) -> None:
    """The comparison table on stdout: the config keys that differ, then the figures."""
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    from ..compare import table

    header, rows = table(comparison)
    shown = Table(*header, title="the config keys that differ, then each run's figures" if comparison["differs"] else None)
    for row in rows:
        shown.add_row(*row)
    if console.is_terminal:  # a terminal wraps the table to fit
        console.print(shown)
    else:  # a file or a pipe gets it whole, one line a run
        whole = Measurement.get(console, console.options.update_width(10_000), shown).maximum
        Console(highlight=False, soft_wrap=True, width=whole).print(shown)


def check_report_path(out: Path) -> None:
    """``--out`` must be a new or existing ``.html`` file in a folder that exists; checked before any work."""
    if out.suffix.lower() not in (".html", ".htm"):
        raise TinyDiffError(f"--out {out}: the report is an HTML file; give a name ending in .html")
    if not out.parent.is_dir():
        raise TinyDiffError(f"--out {out}: the folder {out.parent} does not exist; create it first")
    if out.is_dir():
        raise TinyDiffError(f"--out {out} is a folder; give the report's file name, ending in .html")


@handles_errors
def compare_command(
    refs: list[str] = typer.Argument(..., help="Run directories, or folders of runs such as a sweep's --out."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write an HTML report: table, plots, samples from the same noise, evolution sheets."),
    images: Optional[Path] = typer.Option(None, "--images", help="With --out: also write the report's plots and pictures as PNG files here."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts instead of the table."),
    num: int = typer.Option(20, "--num", min=1, max=256, help="Samples from each run in the report."),
    seed: int = typer.Option(0, "--seed", help="Seed of the report's samples: the same noise for every run."),
    sampler: Optional[str] = typer.Option(None, "--sampler", help="Sampler of the report's samples (default: tinydiff sample's)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Sampler steps of the report's samples."),
    device: str = typer.Option("auto", "--device", help="Where the report's samples are drawn: auto, cpu, cuda or mps."),
) -> None:
    """Compare runs: the config keys that differ, steps, time, speed, loss and the latest evaluation."""
    from ..compare import as_json as comparison_json
    from ..compare import collect_runs, compare_runs

    if images is not None and out is None:
        raise TinyDiffError("--images writes the report's pictures; it needs --out report.html too")
    if out is not None:
        check_report_path(out)
    comparison = compare_runs(collect_runs(refs))
    if as_json:
        typer.echo(json.dumps(comparison_json(comparison), indent=2))
    else:
        print_comparison(comparison)
    if out is not None:
        with importing_torch():
            from ..report import write_report

        with err_console.status("drawing samples and plots for the report"):
            write_report(comparison, out, num=num, seed=seed, sampler=sampler, steps=steps, device=device, images_dir=images)
        err_console.print(f"wrote {out}" + (f" and its pictures in {images}" if images else ""))
