"""The command line end to end: train, sample, inspect through typer's CliRunner, and start-up cost."""

import json
import os
import subprocess
import sys

import re

import numpy as np
import pytest
from conftest import read_gif, read_npz
from typer.testing import CliRunner

from tinydiff import __version__
from tinydiff.cli import app
from tinydiff.images import decode_png

runner = CliRunner()


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, data_dir):
    """One tiny run shared by the tests below: `tinydiff train --config tiny.toml --steps 12 ...`."""
    root = tmp_path_factory.mktemp("cli")
    toml = root / "tiny.toml"
    toml.write_text(
        "[model]\nbase_channels = 16\nchannel_mult = [1, 2]\nnum_res_blocks = 1\nattention_resolutions = [14]\n"
        "groups = 4\nheads = 2\n[schedule]\nnum_steps = 40\n[train]\nlog_every = 4\nsample_num = 4\nsample_steps = 4\n"
    )
    run = root / "R"
    result = runner.invoke(app, ["train", "--preset", "stage3", "--config", str(toml), "--steps", "12", "--batch-size", "16",
                                 "--run-dir", str(run), "--device", "cpu", "--sample-every", "6", "--checkpoint-every", "6"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return run, result


def test_train_reports_and_tracks(trained_run) -> None:
    run, result = trained_run
    assert "training" in result.stderr and "done: step 12" in result.stderr
    assert f"tinydiff sample --model {run}" in result.stderr
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["schedule"]["num_timesteps"] == 40 and record["config"]["train"]["steps"] == 12
    assert record["command"][:2] == ["tinydiff", "train"] or record["command"][0] == "tinydiff"


def npz_images(path):
    return read_npz(path)["images"]


def test_sample_npz_png_and_folder_are_deterministic(trained_run, tmp_path) -> None:
    run, _ = trained_run
    base = ["sample", "--model", str(run), "--num", "5", "--seed", "3", "--no-preview"]
    r1 = runner.invoke(app, [*base, "--out", str(tmp_path / "a.npz")])
    assert r1.exit_code == 0, r1.output
    assert "rerun with --seed" not in r1.stderr, "a seed that was given is not printed"
    images = npz_images(tmp_path / "a.npz")
    assert images.shape == (5, 28, 28) and images.dtype == np.uint8
    assert read_npz(tmp_path / "a.npz")["seed"] == 3
    runner.invoke(app, [*base, "--out", str(tmp_path / "b.npz")])
    assert np.array_equal(images, npz_images(tmp_path / "b.npz")), "same seed, same images"
    other = ["sample", "--model", str(run), "--num", "5", "--seed", "4", "--no-preview"]
    assert runner.invoke(app, [*other, "--out", str(tmp_path / "c.npz")]).exit_code == 0
    assert not np.array_equal(images, npz_images(tmp_path / "c.npz"))

    assert runner.invoke(app, [*base, "--out", str(tmp_path / "grid.png")]).exit_code == 0
    grid = decode_png((tmp_path / "grid.png").read_bytes())
    assert grid.shape == (4 * (2 + 2 * 30), 4 * (2 + 3 * 30))  # 5 images: 3 per row, 2 rows, 2px padding; 4x
    assert np.array_equal(grid[8:120:4, 8:120:4], images[0]) and np.array_equal(grid[8:120, 8:120][1::4, 3::4], images[0])
    assert runner.invoke(app, [*base, "--scale", "1", "--out", str(tmp_path / "small.png")]).exit_code == 0
    small = decode_png((tmp_path / "small.png").read_bytes())
    assert small.shape == (2 + 2 * 30, 2 + 3 * 30) and np.array_equal(small, grid[::4, ::4])

    assert runner.invoke(app, [*base, "--out", str(tmp_path / "each") + "/"]).exit_code == 0
    files = sorted((tmp_path / "each").iterdir())
    assert [f.name for f in files] == [f"{i:04d}.png" for i in range(5)]
    assert np.array_equal(decode_png(files[4].read_bytes()), images[4])


def test_sample_without_a_seed_draws_fresh_images_prints_the_seed_and_that_seed_draws_them_again(trained_run, tmp_path) -> None:
    run, _ = trained_run
    base = ["sample", "--model", str(run), "--num", "3", "--steps", "3", "--device", "cpu", "--no-preview"]
    seeds, images = [], []
    for name in ("a.npz", "b.npz"):
        result = runner.invoke(app, [*base, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        said = re.findall(r"^seed (\d+); rerun with --seed (\d+) for the same images$", result.stderr, re.M)
        assert len(said) == 1 and said[0][0] == said[0][1], result.stderr
        seeds.append(int(said[0][0]))
        images.append(npz_images(tmp_path / name))
        assert read_npz(tmp_path / name)["seed"] == seeds[-1], "the .npz records the seed it was drawn from"
    assert seeds[0] != seeds[1] and not np.array_equal(images[0], images[1]), "each run draws fresh images"
    again = runner.invoke(app, [*base, "--seed", str(seeds[0]), "--out", str(tmp_path / "again.npz")])
    assert again.exit_code == 0 and "rerun with" not in again.stderr
    assert np.array_equal(npz_images(tmp_path / "again.npz"), images[0]), "the printed seed draws the same images, bit for bit"


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++"])
def test_sample_gif_shows_the_trajectory_of_every_image_frame_by_frame(trained_run, tmp_path, sampler) -> None:
    from tinydiff.pipeline import Pipeline

    run, _ = trained_run
    args = ["sample", "--model", str(run), "--num", "3", "--steps", "4", "--sampler", sampler, "--seed", "2", "--scale", "2",
            "--device", "cpu", "--out", str(tmp_path / "s.npz"), "--gif", str(tmp_path / "d.gif"), "--no-preview"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"wrote the denoising, 4 steps, to {tmp_path / 'd.gif'}" in result.stderr
    frames, durations = read_gif((tmp_path / "d.gif").read_bytes())
    trajectory = Pipeline.from_ref(str(run), device="cpu").sample(3, seed=2, sampler=sampler, steps=4, trajectory=True)
    np.testing.assert_array_equal(frames, trajectory.frames(scale=2))
    np.testing.assert_array_equal(npz_images(tmp_path / "s.npz"), trajectory.images.numpy())
    assert len(frames) == 5 and durations[-1] > durations[0], "every step, then a pause on the finished images"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.gif", "s.npz"]


def test_the_default_sample_does_not_import_pillow(trained_run, tmp_path) -> None:
    """Pillow costs start-up time: only --gif (and a notebook's PIL images) import it."""
    run, _ = trained_run
    code = (
        "import sys\nfrom tinydiff.cli import main\n"
        f"try:\n    main(['sample', '--model', {str(run)!r}, '--num', '2', '--steps', '2', '--no-preview'])\n"
        "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "assert 'PIL' not in sys.modules, 'Pillow was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "samples.png").is_file()


def test_scale_on_arrays_has_no_effect_and_says_so(trained_run, tmp_path) -> None:
    run, _ = trained_run
    result = runner.invoke(app, ["sample", "--model", str(run), "--num", "2", "--steps", "2", "--seed", "1", "--scale", "3",
                                 "--out", str(tmp_path / "a.npz"), "--no-preview"])  # fmt: skip
    assert result.exit_code == 0 and "warning: --scale has no effect on an .npz" in result.stderr
    assert npz_images(tmp_path / "a.npz").shape == (2, 28, 28)


def test_sample_draws_a_preview_and_respaces(trained_run, tmp_path) -> None:
    run, _ = trained_run
    args = ["sample", "--model", str(run), "--num", "2", "--steps", "5", "--seed", "0", "--out", str(tmp_path / "p.png")]
    result = runner.invoke(app, args, env={"FORCE_COLOR": "1", "NO_COLOR": None, "TERM": "xterm-256color"})  # as on a colour terminal
    assert result.exit_code == 0, result.output
    assert "▀" in result.stdout and len(result.stdout.splitlines()) == 16  # (2 + 28 + 2) rows / 2
    assert "wrote 2 images" in result.stderr


def test_inspect_run_and_json(trained_run) -> None:
    run, _ = trained_run
    result = runner.invoke(app, ["inspect", str(run), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["step"] == 12 and info["steps"] == 12 and info["preset"] == "stage3"
    assert info["model"]["schedule"]["name"] == "linear" and info["model"]["parameters"] > 10_000
    assert len(info["checkpoints"]) == 2 and len(info["snapshots"]) == 2 and info["evolution"]
    assert isinstance(info["loss"], float)
    text = runner.invoke(app, ["inspect", str(run)])
    assert text.exit_code == 0 and "step 12 of 12" in text.stdout and "parameters" in text.stdout
    folder = runner.invoke(app, ["inspect", str(run / "checkpoints" / "step-000006"), "--json"])
    assert json.loads(folder.stdout)["training"]["step"] == 6


def test_inspect_lists_runs(trained_run, monkeypatch) -> None:
    run, _ = trained_run
    monkeypatch.chdir(run.parent.parent)
    (run.parent.parent / "runs").mkdir(exist_ok=True)
    link = run.parent.parent / "runs" / "linked"
    if not link.exists():
        link.symlink_to(run)
    result = runner.invoke(app, ["inspect", "--json"])
    assert [r["run_dir"] for r in json.loads(result.stdout)] == ["runs/linked"]
    table = runner.invoke(app, ["inspect"])
    assert "runs/linked" in table.stdout and "12/12" in table.stdout


def test_inspect_shows_the_latest_logged_step_while_a_run_trains(tmp_path, tiny_config, data_dir) -> None:
    from tinydiff.train import train

    class Stop(Exception):
        pass

    def stop_at_step_10(event):
        if event["event"] == "log" and event["step"] == 10:
            raise Stop  # as if inspected mid-run: metrics at steps 5 and 10, no checkpoint yet

    with pytest.raises(Stop):
        train(tiny_config(steps=20, checkpoint_every=20, sample_every=20), tmp_path / "run", callback=stop_at_step_10)
    info = json.loads(runner.invoke(app, ["inspect", str(tmp_path / "run"), "--json"]).stdout)
    last = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()][-1]
    assert (info["step"], info["loss"], info["checkpoint_step"]) == (10, last["loss"], None)
    text = runner.invoke(app, ["inspect", str(tmp_path / "run")], env={"COLUMNS": "200"}).stdout
    assert f"step 10 of 20, loss {last['loss']:.4g}" in text and "(no checkpoint yet)" in text


def test_inspect_lists_a_folder_of_runs_and_the_runs_of_a_sweep(tiny_sweep, tmp_path, monkeypatch) -> None:
    listed = json.loads(runner.invoke(app, ["inspect", str(tiny_sweep), "--json"]).stdout)
    assert [r["run_dir"] for r in listed] == [str(tiny_sweep / "cosine"), str(tiny_sweep / "linear")]
    assert all(r["step"] == 10 and r["steps"] == 10 for r in listed)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "my-sweep").symlink_to(tiny_sweep)
    nested = json.loads(runner.invoke(app, ["inspect", "--json"]).stdout)
    assert [r["run_dir"] for r in nested] == ["runs/my-sweep/cosine", "runs/my-sweep/linear"], "./runs and the sweeps in it"


def test_resume_extends_a_run(trained_run, tmp_path) -> None:
    run, _ = trained_run
    import shutil

    copy = tmp_path / "R"
    shutil.copytree(run, copy)
    result = runner.invoke(app, ["train", "--resume", "--run-dir", str(copy), "--steps", "14", "--checkpoint-every", "100"])
    assert result.exit_code == 0, result.output
    assert "resuming at step 12" in result.stderr
    assert json.loads(runner.invoke(app, ["inspect", str(copy), "--json"]).stdout)["step"] == 14
    bad = runner.invoke(app, ["train", "--resume", "--run-dir", str(copy), "--batch-size", "99"])
    assert bad.exit_code == 1 and "--batch-size sets train.batch_size = 99, but the run in" in bad.stderr


def test_version_and_help_do_not_import_torch() -> None:
    code = (
        "import sys\nfrom tinydiff.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'torchvision' not in sys.modules\n"
    )
    for args in (["--version"], ["--help"], ["train", "--help"], ["sample", "--help"], ["sweep", "--help"], ["compare", "--help"]):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
    version = subprocess.run([sys.executable, "-m", "tinydiff", "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == f"tinydiff {__version__}"


def test_sampling_path_imports_neither_torchvision_nor_matplotlib_nor_dynamo(trained_run) -> None:
    run, _ = trained_run
    code = (
        "import sys\nfrom tinydiff.pipeline import Pipeline\n"
        f"Pipeline.from_ref({str(run)!r}).sample(1, steps=2, seed=0)\n"
        "Pipeline.from_ref().sample(1, prompts=['a 7'], steps=2, seed=0)\n"  # the bundled text model
        "assert 'torchvision' not in sys.modules, 'torchvision was imported'\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib (for compare reports) was imported'\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo (over a second of start-up) was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_sample_as_a_process_ends_without_torch_teardown_and_loses_no_output(tmp_path) -> None:
    """`python -m tinydiff sample` ends through exit_now: the PNG is whole, stdout's preview and stderr's line arrive."""
    out = subprocess.run([sys.executable, "-m", "tinydiff", "sample", "a handwritten seven", "--num", "4", "--steps", "2",
                          "--out", "four.png", "--device", "cpu"], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, "FORCE_COLOR": "1", "TERM": "xterm-256color"})  # as on a colour terminal  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert decode_png((tmp_path / "four.png").read_bytes()).shape == (4 * 62, 4 * 62)  # a 2x2 grid, padding 2, 4x
    assert "wrote 4 images" in out.stderr and "; rerun with --seed " in out.stderr
    preview = out.stdout.splitlines()
    assert len(preview) >= 10 and all("\u2580" in line or line.strip() == "" for line in preview), out.stdout[-300:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["four.png"]  # no temporary file left beside it


@pytest.mark.parametrize("out_name, skips_teardown", [("one.png", True), ("one.txt", False)])
def test_only_a_successful_sample_skips_the_interpreter_teardown(tmp_path, out_name, skips_teardown) -> None:
    """A module-level object's finalizer runs at the interpreter's teardown: not after a successful sample, but after an error."""
    code = (
        "import sys\nclass Mark:\n    def __del__(self):\n        sys.stderr.write('teardown ran\\n')\n"
        "mark = Mark()\nfrom tinydiff.cli import main\n"
        f"sys.argv = ['tinydiff', 'sample', '7', '--num', '1', '--steps', '1', '--out', {out_name!r}, '--no-preview']\nmain()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == (0 if skips_teardown else 1), out.stderr
    assert ("teardown ran" not in out.stderr) == skips_teardown, out.stderr
    assert (tmp_path / out_name).is_file() == skips_teardown


def test_exit_now_runs_atexit_handlers_flushes_and_keeps_the_status(tmp_path) -> None:
    code = (
        "import atexit, sys, pathlib\nfrom tinydiff.cli.output import exit_now\n"
        f"atexit.register(lambda: pathlib.Path({str(tmp_path / 'atexit-ran')!r}).write_text('yes'))\n"
        "sys.stdout.write('buffered, no newline')\nsys.stderr.write('err, no newline')\nexit_now(3)\n"
        "print('never reached')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    assert out.stdout == "buffered, no newline" and out.stderr == "err, no newline"
    assert (tmp_path / "atexit-ran").read_text() == "yes"


def test_main_called_with_arguments_raises_systemexit_instead_of_ending_the_process(trained_run, tmp_path, monkeypatch) -> None:
    """A caller's main(args) (tests, scripts) gets SystemExit after sample, never os._exit."""
    from tinydiff.cli import main

    run, _ = trained_run
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["sample", "--model", str(run), "--num", "1", "--steps", "2", "--out", "one.png", "--no-preview"])
    assert exc.value.code == 0 and (tmp_path / "one.png").is_file()


def test_importing_torch_pauses_the_collector_and_restores_it_even_on_error() -> None:
    import gc

    from tinydiff.cli.output import importing_torch

    assert gc.isenabled()
    with importing_torch():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ImportError), importing_torch():
        raise ImportError("a plugin failed to import")
    assert gc.isenabled()
    gc.disable()
    try:
        with importing_torch():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()


def _warn_each_kind() -> None:
    import warnings

    from tinydiff.plugins import PluginWarning

    warnings.warn("plugin 'x' failed to load; it is skipped", PluginWarning, stacklevel=1)
    warnings.warn("a prompt-level notice", UserWarning, stacklevel=1)
    warnings.warn("unclosed file <_io.BufferedReader name='x.npz'>", ResourceWarning, stacklevel=1)
    warnings.warn("torch.foo is deprecated", DeprecationWarning, stacklevel=1)
    warnings.warn("bar will be deprecated", PendingDeprecationWarning, stacklevel=1)


def test_commands_show_user_warnings_as_one_line_and_hide_what_python_hides(capsys, monkeypatch) -> None:
    """A ResourceWarning the collector raises mid-command, or a library's deprecation notice, is not a user's concern."""
    from tinydiff.cli.output import handles_errors

    monkeypatch.setattr(sys, "warnoptions", [])
    handles_errors(_warn_each_kind)()
    err = capsys.readouterr().err
    assert err.splitlines() == ["warning: plugin 'x' failed to load; it is skipped", "warning: a prompt-level notice"]


def test_pythonwarnings_given_by_the_user_are_respected(capsys, monkeypatch) -> None:
    import warnings

    from tinydiff.cli.output import handles_errors

    monkeypatch.setattr(sys, "warnoptions", ["default"])
    with warnings.catch_warnings():
        warnings.simplefilter("default")  # what `python -W default` sets before any code runs
        handles_errors(_warn_each_kind)()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 5 and all(line.startswith("warning: ") for line in lines)
    assert "warning: unclosed file <_io.BufferedReader name='x.npz'>" in lines
