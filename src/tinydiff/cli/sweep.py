"""``tinydiff sweep``: train every variant of a sweep file under one progress display, evaluate them, compare them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from .output import console, err_console, handles_errors, importing_torch


def _change(key: str, pair: tuple[Any, Any]) -> str:
    return f"{key} {pair[0]!r} -> {pair[1]!r}" if pair[0] is not None else f"{key} = {pair[1]!r}"


@handles_errors
def sweep_command(
    sweep_file: Path = typer.Argument(..., help="The sweep file (TOML): a base, a budget, a \\[grid] or \\[variants.NAME] table, \\[eval]."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder of the sweep's runs (default: runs/<sweep file name>)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the variants and what each changes; train nothing."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or mps, for every variant."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Folder holding MNIST/raw (default: $TINYDIFF_DATA_DIR)."),
) -> None:
    """Train the variants of a sweep file one after the other, evaluate each, and compare them (run again to continue)."""
    from rich.table import Table

    with importing_torch():
        import torch  # noqa: F401  (checking the variants builds their networks)

        from ..sweep import REPORT, load_sweep, run_sweep, trained_variants, variant_status

    sweep = load_sweep(sweep_file, device=device, data_dir=data_dir)  # every variant resolved and checked, nothing written
    out = out or Path("runs") / sweep_file.stem
    if dry_run:
        trained = trained_variants(out) if out.is_dir() else {}
        budget = ", ".join(f"{k} {v}" for k, v in (("steps", sweep.spec.steps), ("max_minutes", sweep.spec.max_minutes)) if v)
        table = Table("variant", "status", "what it changes", title=f"{len(sweep.variants)} variants of {sweep.base.preset} "
                      f"({budget}) into {out}")  # fmt: skip
        for v in sweep.variants:
            changes = "; ".join(_change(k, pair) for k, pair in v.changes.items()) or "nothing (the base)"
            table.add_row(v.name, variant_status(v, out, trained, sweep.spec.eval), changes)
        console.print(table)
        return

    with SweepProgress() as progress:
        run_sweep(sweep, out, callback=progress)

    from ..compare import compare_runs
    from ..report import write_report
    from .compare import print_comparison

    comparison = compare_runs([out / v.name for v in sweep.variants])
    print_comparison(comparison)
    with err_console.status("drawing samples and plots for the report"):
        write_report(comparison, out / REPORT, device=sweep.base.train.device)
    err_console.print(f"done: {len(sweep.variants)} runs in {out}; report in {out / REPORT}")
    err_console.print(f"next: tinydiff sample --model {out / sweep.variants[0].name}, or tinydiff compare {out} OTHER_RUNS")


class SweepProgress:
    """One Rich display for the whole sweep: an overall bar over every variant's steps, and the current variant's."""

    def __enter__(self) -> "SweepProgress":
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=False,
        )  # fmt: skip
        self.started = False
        self.steps: dict[str, int] = {}
        self.done = 0  # steps of the variants finished so far
        self.finished = 0
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.started:  # an early error stays one line
            self.progress.__exit__(*exc)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        say = self.progress.console.print
        if kind == "sweep":
            self.steps = event["steps"]
            self.progress.__enter__()
            self.started = True
            self.overall = self.progress.add_task("sweep", total=sum(self.steps.values()), stats=f"0/{len(self.steps)} variants")
            self.current = self.progress.add_task("", total=1, stats="")
        elif kind == "variant":
            name, status = event["name"], event["status"]
            if status in ("trained", "evaluated"):
                say(f"{name}: trained already, kept")
                self._finished(name)
            else:
                self.progress.update(self.current, description=name, total=self.steps[name], completed=0, stats="")
        elif kind == "start":
            say(f"{event['variant']}: training {event['parameters'] / 1e6:.2f}M parameters on {event['device']} into {event['run_dir']}"
                + (f" (resuming at step {event['step']})" if event["step"] else ""))  # fmt: skip
        elif kind == "log":
            self.progress.update(self.current, stats=f"loss {event['loss']:.4f}  {event['img_per_s']:.0f} img/s")
        elif kind == "step":
            self.progress.update(self.current, completed=event["step"])
            self.progress.update(self.overall, completed=self.done + event["step"])
        elif kind == "end" and not event.get("interrupted"):  # a Ctrl-C ends the variant unfinished
            self._finished(event["variant"])
        elif kind == "evaluate":
            self.progress.update(self.current, description=f"eval {event['name']}", completed=0, total=1, stats="")
        elif kind == "eval_batch":
            self.progress.update(self.current, total=event["total"], completed=event["done"])
        elif kind == "evaluated":
            r = event["report"]
            acc = f"prompt accuracy {r['accuracy']:.1%} (worst digit {r['min_digit_accuracy']:.0%}), " if "accuracy" in r else ""
            say(f"{event['name']}: {acc}MNIST-FD {r['mnist_fd']:.2f} ({r['fd_ratio']:.2f}x the floor), confidence {r['confidence']:.1%}")

    def _finished(self, name: str) -> None:
        self.done += self.steps[name]
        self.finished += 1
        self.progress.update(self.overall, completed=self.done, stats=f"{self.finished}/{len(self.steps)} variants trained")
