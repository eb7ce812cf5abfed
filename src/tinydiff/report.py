"""The comparison report: one self-contained HTML page, its plots drawn by matplotlib, every image embedded.

    tinydiff compare runs/schedules --out report.html

The page holds the comparison table, training loss against step and against training
time for every run on one plot, the ``--eval-every`` figures against step, a grid of
samples from each run's newest checkpoint drawn from the same noise and the same
prompts (so the only difference is the run), and each run's evolution sheet. Images
are ``data:`` URIs, so the file opens offline and travels alone. matplotlib is
imported here only, never on the sampling path.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from .compare import table
from .files import write_atomic, write_files_atomic
from .images import decode_png, encode_png, make_grid

SAMPLES_PER_ROW = 10  # one column per digit: text models are asked "a handwritten zero" to "nine" along each row


def sample_grids(
    comparison: dict[str, Any], *, num: int, seed: int, sampler: str | None = None, steps: int | None = None, device: str = "cpu"
) -> dict[str, np.ndarray]:
    """A grid from each run's newest checkpoint, all from the same seed (the same starting noise) and the same prompts."""
    from .captions import DIGIT_WORDS
    from .pipeline import Pipeline

    prompts = [f"a handwritten {DIGIT_WORDS[i % 10]}" for i in range(num)]
    grids = {}
    for run in comparison["runs"]:
        if run["checkpoint"] is None:
            continue  # no checkpoint yet: nothing to sample
        pipe = Pipeline.from_ref(run["checkpoint"], device=device)
        images = pipe.sample(num, prompts=prompts if pipe.is_text_model else None, seed=seed, sampler=sampler, steps=steps)
        grids[run["name"]] = make_grid(images.cpu().numpy(), nrow=min(num, SAMPLES_PER_ROW))
    return grids


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def loss_plot(comparison: dict[str, Any]) -> bytes:
    """Training loss against step and against training time, every run on both axes, as PNG bytes."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    figure = Figure(figsize=(11, 3.8), layout="constrained")
    by_step, by_time = figure.subplots(1, 2)
    for run in comparison["runs"]:
        curve = run["curve"]
        by_step.plot(curve["step"], curve["loss"], label=run["name"])
        by_time.plot([s / 60 for s in curve["seconds"]], curve["loss"], label=run["name"])
    for axes, xlabel in ((by_step, "step"), (by_time, "training time (minutes)")):
        axes.set_xlabel(xlabel)
        axes.set_ylabel("training loss")
        axes.set_yscale("log")
        axes.grid(alpha=0.3)
    by_step.legend()
    return _png(figure)


EVAL_FIGURES = (("fd_ratio", "MNIST-FD / real-data floor", "log"), ("accuracy", "prompt accuracy", "linear"),
                ("confidence", "classifier confidence", "linear"))  # fmt: skip


def eval_plot(comparison: dict[str, Any]) -> bytes | None:
    """The ``--eval-every`` figures against step (None when no run recorded any), as PNG bytes."""
    from matplotlib.figure import Figure

    shown = [f for f in EVAL_FIGURES if any(f[0] in e for run in comparison["runs"] for e in run["evaluations"])]
    if not shown:
        return None
    figure = Figure(figsize=(3.8 * len(shown) + 1, 3.6), layout="constrained")
    axes_list = np.atleast_1d(figure.subplots(1, len(shown)))
    for axes, (key, label, scale) in zip(axes_list, shown):
        for index, run in enumerate(comparison["runs"]):
            points = [(e["step"], e[key]) for e in run["evaluations"] if e.get(key) is not None]
            if points:
                axes.plot(*zip(*points), marker="o", color=f"C{index}", label=run["name"])
        axes.set_xlabel("step")
        axes.set_ylabel(label)
        axes.set_yscale(scale)
        axes.grid(alpha=0.3)
    axes_list[0].legend()
    return _png(figure)


def _img(data: bytes, alt: str, *, width: int | None = None, pixelated: bool = False) -> str:
    style = f' style="width:{width}px"' if width else ""
    cls = ' class="pixels"' if pixelated else ""
    src = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return f'<img src="{src}" alt="{html.escape(alt)}"{cls}{style}>'


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; background: #fff; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; }
img.pixels { image-rendering: pixelated; }
.row { display: flex; flex-wrap: wrap; gap: 18px; }
figure { margin: 0; }
figcaption { font-size: 14px; margin-top: 4px; }
"""


def render_html(
    comparison: dict[str, Any], *, loss_png: bytes, eval_png: bytes | None, grids: dict[str, np.ndarray], note: str
) -> str:
    """The report page as one HTML string."""
    header, rows = table(comparison)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    parts = [
        f"<h1>Comparison of {len(comparison['runs'])} runs</h1>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
        "<h2>Training loss</h2>", _img(loss_png, "training loss against step and against training time"),
    ]  # fmt: skip
    if eval_png is not None:
        parts += ["<h2>Evaluation during training</h2>", _img(eval_png, "evaluation figures against step")]
    if grids:
        parts += [f"<h2>Samples from the same noise and the same prompts</h2><p>{html.escape(note)}</p>", '<div class="row">']
        parts += [f"<figure>{_img(encode_png(g), f'samples of {name}', width=2 * g.shape[1], pixelated=True)}"
                  f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, g in grids.items()]  # fmt: skip
        parts.append("</div>")
    sheets = [(run["name"], Path(run["evolution"]).read_bytes()) for run in comparison["runs"] if run["evolution"]]
    if sheets:
        parts.append('<h2>Evolution: the snapshots of each run, same noise every time</h2><div class="row">')
        parts += [f"<figure>{_img(data, f'evolution of {name}', width=2 * decode_png(data).shape[1], pixelated=True)}"
                  f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, data in sheets]  # fmt: skip
        parts.append("</div>")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>TinyDiff comparison</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n"
    )


def write_report(
    comparison: dict[str, Any],
    path: str | Path,
    *,
    num: int = 20,
    seed: int = 0,
    sampler: str | None = None,
    steps: int | None = None,
    device: str = "cpu",
    images_dir: str | Path | None = None,
) -> None:
    """Sample every run, draw the plots and write the report; with ``images_dir``, also each picture as a PNG file (for docs)."""
    grids = sample_grids(comparison, num=num, seed=seed, sampler=sampler, steps=steps, device=device)
    loss_png, eval_png = loss_plot(comparison), eval_plot(comparison)
    note = (f"{num} images from each run's newest checkpoint, seed {seed}, sampler {sampler or 'default'}"
            f"{f', {steps} steps' if steps else ''}; text models are asked for \"a handwritten zero\" to \"nine\" "
            "along each row, unconditional ones for nothing.")  # fmt: skip
    write_atomic(path, render_html(comparison, loss_png=loss_png, eval_png=eval_png, grids=grids, note=note).encode("utf-8"))
    if images_dir is not None:
        files = {"loss.png": loss_png, **({"eval.png": eval_png} if eval_png else {})}
        files |= {f"{name}-samples.png": encode_png(grid) for name, grid in grids.items()}
        files |= {f"{run['name']}-evolution.png": Path(run["evolution"]).read_bytes() for run in comparison["runs"] if run["evolution"]}
        Path(images_dir).mkdir(parents=True, exist_ok=True)
        write_files_atomic(Path(images_dir), files)
