"""Output as a user sees it: piped, redirected to a log file, under NO_COLOR, and with stdout closed early.

Data goes to stdout, messages to stderr; the preview is drawn only on a colour terminal; a progress bar
is drawn only on a terminal (in a log file it would leave a blank line); a reader that goes away
(`| head -1`) does not make the command fail. The commands run in-process (``main(args)``), where
stdout and stderr are not terminals, exactly as in a pipe; one test runs a real shell pipeline.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SMALLEST_MODEL, run_cli
from tinydiff.cli import main

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # any control character but tab and newline (escape codes, \r)
TINY = SMALLEST_MODEL


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("NO_COLOR", "FORCE_COLOR", "TINYDIFF_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.chdir(tmp_path)


def sample_args(model: Path, out: str = "x.png") -> list[str]:
    return ["sample", "--model", str(model), "--num", "2", "--steps", "1", "--seed", "0", "--device", "cpu", "--out", out]


def test_piped_sample_prints_no_preview_and_one_plain_line(model_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(sample_args(model_folder), capsys)
    assert (code, out, err) == (0, "", "wrote 2 images (a grid) to x.png\n")


def test_a_fresh_seed_is_told_in_plain_lines(model_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [a for a in sample_args(model_folder) if a not in ("--seed", "0")]
    code, out, err = run_cli(args, capsys)
    assert code == 0 and out == ""
    assert re.fullmatch(r"wrote 2 images \(a grid\) to x\.png\nseed (\d+); rerun with --seed \1 for the same images\n", err), err


def test_a_colour_terminal_gets_the_preview_in_colour(model_folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORCE_COLOR", "1")
    code, out, err = run_cli(sample_args(model_folder), capsys)
    assert code == 0 and "wrote 2 images (a grid) to x.png\n" in err
    lines = out.splitlines()
    assert len(lines) == 16 and all("\u2580" in line for line in lines)  # (2 + 28 + 2) pixel rows, two a line
    assert re.search(r"\x1b\[38;[\d;]*;48;", out), "the half-blocks need their foreground and background colours"


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {"NO_COLOR": "1", "FORCE_COLOR": "1"}, {"TERM": "dumb", "FORCE_COLOR": "1"}])
def test_no_color_and_dumb_terminals_get_no_preview(model_folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                                                    env: dict[str, str]) -> None:  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, out, err = run_cli(sample_args(model_folder), capsys)
    assert (code, out) == (0, "")
    assert err.endswith("wrote 2 images (a grid) to x.png\n")


@pytest.fixture
def closed_stdout(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """stdout is a pipe whose reader went away (`| head -1` after its line): every write fails with EPIPE."""
    capsys.readouterr()
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = open(write_end, "w", buffering=1, encoding="utf-8")
    monkeypatch.setattr(sys, "stdout", stream)
    yield stream
    monkeypatch.undo()
    stream.close()


def test_a_closed_stdout_does_not_fail_sample_nor_lose_the_wrote_line(
    model_folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, closed_stdout: io.TextIOBase
) -> None:
    from rich.console import Console

    colour = lambda: Console(force_terminal=True, color_system="256", highlight=False, soft_wrap=True)  # noqa: E731
    monkeypatch.setattr("tinydiff.cli.sample.preview_console", colour)  # the preview is drawn, into the closed pipe
    with pytest.raises(SystemExit) as info:
        main(sample_args(model_folder))
    err = capsys.readouterr().err
    assert (info.value.code, err) == (0, "wrote 2 images (a grid) to x.png\n")
    assert sorted(p.name for p in Path().iterdir()) == ["x.png"]


def test_a_closed_stdout_does_not_fail_inspect(model_folder: Path, capsys: pytest.CaptureFixture[str], closed_stdout: io.TextIOBase) -> None:
    with pytest.raises(SystemExit) as info:
        main(["inspect", str(model_folder), "--json"])
    assert (info.value.code, capsys.readouterr().err) == (0, "")


def test_piped_inspect_is_plain_text_and_json(model_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["inspect", str(model_folder)], capsys)
    assert (code, err) == (0, "")
    assert not CONTROL.search(out), repr(out)
    rows = {line.split()[0]: line.split(maxsplit=1)[1].rstrip() for line in out.splitlines() if line.strip()}
    assert rows["schedule"] == "linear, T=50" and rows["objective"] == "epsilon" and rows["parameters"] == "40,489"
    code, out, err = run_cli(["inspect", str(model_folder), "--json"], capsys)
    assert (code, err) == (0, "") and json.loads(out)["schedule"]["num_timesteps"] == 50


def test_piped_eval_has_no_progress_residue(model_folder: Path, capsys: pytest.CaptureFixture[str], data_dir: Path) -> None:
    """No blank line on stderr where a progress bar would have been; stdout: the figures, no control characters."""
    args = ["eval", "--model", str(model_folder), "--num-per-digit", "2", "--steps", "2", "--device", "cpu"]
    code, out, err = run_cli(args, capsys)
    assert (code, err) == (0, "")
    assert not CONTROL.search(out), repr(out)
    assert re.match(r"\s*\S*tiny: 20 images, dpm\+\+, 2 network evaluations each, [\d.]+ s\n", out), out
    assert "MNIST-FD" in out and "real-data floor at this N" in out


def test_a_shell_pipeline_and_a_log_file(model_folder: Path, tmp_path: Path) -> None:
    """`tinydiff sample ... 2>log | head -1` as a user types it: exit 0, an empty pipe, one plain line in the log."""
    command = " ".join(["set -o pipefail;", sys.executable, "-m", "tinydiff", *sample_args(model_folder), "2>log", "| head -1"])
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR")}
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert (tmp_path / "log").read_text() == "wrote 2 images (a grid) to x.png\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log", "x.png"]


def test_prompts_from_standard_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`printf 'a seven\\na three\\n' | tinydiff sample --prompts-file -`: one grid row a prompt, in order."""
    from conftest import read_npz

    from tinydiff.checkpoint import ModelFolderConfig, save_model_folder
    from tinydiff.config import ModelConfig, ScheduleConfig, TextConfig
    from tinydiff.nn.text import Tokenizer
    from tinydiff.nn.unet import UNet

    cfg = ModelConfig(**TINY, text=TextConfig(dim=8, layers=1, heads=2, max_length=6), cross_attention_resolutions=[14])
    tokenizer = Tokenizer(["a", "seven", "three"], max_length=6)
    save_model_folder(tmp_path / "m", ModelFolderConfig(model=cfg, schedule=ScheduleConfig(num_timesteps=50)),
                      UNet(cfg, tokenizer=tokenizer).state_dict(), tokenizer)  # fmt: skip
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"a seven\n\na three\n")))
    code, out, err = run_cli(["sample", "--prompts-file", "-", "--model", "m", "--num", "2", "--steps", "1", "--seed", "0", "--out", "x.npz"], capsys)
    assert (code, out, err) == (0, "", "wrote 4 images (an .npz) to x.npz\n")
    assert read_npz(tmp_path / "x.npz")["prompts"].tolist() == ["a seven", "a seven", "a three", "a three"]


def test_completion_script_and_values(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`--show-completion` prints the script for the shell it runs from; completing `--preset` and `--sampler` offers the choices."""
    monkeypatch.setattr("typer.completion._get_shell_name", lambda: "bash")  # as if run from bash, whatever started the tests
    code, out, err = run_cli(["--show-completion"], capsys)
    assert code == 0 and "_tinydiff_completion()" in out, err and "complete -o default -F _tinydiff_completion tinydiff" in out
    monkeypatch.setenv("_TINYDIFF_COMPLETE", "complete_bash")
    for words, offered in [("tinydiff train --preset st", ["stage1", "stage2", "stage3", "stage4"]),
                           ("tinydiff sample --sampler d", ["ddpm", "ddim", "dpm++"]),
                           ("tinydiff sample --device c", ["cpu", "cuda"])]:  # fmt: skip
        monkeypatch.setenv("COMP_WORDS", words)
        monkeypatch.setenv("COMP_CWORD", str(len(words.split()) - 1))
        capsys.readouterr()
        with pytest.raises(SystemExit):
            main([])  # the words to complete come from COMP_WORDS
        assert capsys.readouterr().out.split() == offered


def test_train_help_shows_the_defaults(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    code, out, err = run_cli(["train", "--help"], capsys)
    assert code == 0
    for option, default in [("--steps", "(preset laptop: 20000)"), ("--lr", "(preset laptop: 0.001)"), ("--schedule", "(preset laptop: linear)"),
                            ("--preset", "(laptop)"), ("--device", "(preset laptop: auto)"), ("--eval-every", "(off)")]:  # fmt: skip
        line = next(line for line in out.splitlines() if f" {option} " in line)
        assert f"[default: {default}]" in line, line
    assert "<gpu|laptop|stage1|stage2|stage3|stage4>" in out and "<auto|cpu|cuda|mps>" in out and "<text|none>" in out


def test_one_damaged_run_does_not_hide_the_others(model_folder: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`tinydiff inspect` lists the sound runs under ./runs and says, in one warning line, which one it skipped."""
    import shutil

    for name, record in [("good", {"config": {"preset": "stage3", "train": {"steps": 10}}}), ("bad", [1, 2])]:
        run_dir = Path("runs") / name
        shutil.copytree(model_folder, run_dir / "checkpoints" / "step-000010")
        (run_dir / "config.json").write_text(json.dumps(record))
    monkeypatch.setenv("COLUMNS", "200")
    code, out, err = run_cli(["inspect", "--json"], capsys)
    assert code == 0
    assert [(r["run_dir"], r["preset"], r["step"]) for r in json.loads(out)] == [("runs/good", "stage3", 10)]
    assert re.fullmatch(r"warning: runs/bad/config\.json must hold a JSON object, not a list; .*that run is not listed \(tinydiff inspect runs/bad says more\)\n", err), err
