"""The plugin registry: built-ins through the hooks, throwaway plugins, entry points, broken plugins."""

import json
import textwrap
from pathlib import Path

import pytest
import torch

from tinydiff import hookimpl, plugins
from tinydiff.errors import TinyDiffError
from tinydiff.plugins import PluginWarning, get_host, registry
from tinydiff.schedules import NoiseSchedule

REPO = Path(__file__).resolve().parents[1]
EXTRA = REPO / "plugins" / "tinydiff-extra-schedules"


@pytest.fixture(autouse=True)
def fresh_host(monkeypatch):
    # conftest hides plugins installed on this machine (and names them in this variable for the processes tests start);
    # the plugins these tests make are loaded whatever their names
    monkeypatch.delenv("TINYDIFF_DISABLE_PLUGINS", raising=False)
    plugins.reset()
    yield
    plugins.reset()


def fake_distribution(root: Path, dist: str, entry_name: str, module: str, source: str | None = None) -> None:
    """A distribution importlib.metadata finds on sys.path, exactly as pip would leave it."""
    info = root / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[tinydiff]\n{entry_name} = {module}\n")
    if source is not None:
        (root / f"{module}.py").write_text(textwrap.dedent(source))


def test_builtins_register_through_the_hooks() -> None:
    host = get_host()
    assert registry("schedule").names() == ["cosine", "linear", "sigmoid"]
    assert registry("sampler").names() == ["ddim", "ddpm", "dpm++"]
    assert registry("text_encoder").names() == ["tinytext"]
    assert registry("block").names() == ["attention", "cross_attention", "downsample", "resblock", "upsample"]
    assert registry("tracker").names() == ["csv", "jsonl", "tensorboard"]
    assert host.plugins["tinydiff.schedules"].registered == {"schedule": ["linear", "cosine", "sigmoid"]}
    assert all(info.builtin for info in host.plugins.values())


def test_throwaway_plugin_adds_a_schedule_and_is_removed() -> None:
    class Plugin:
        @staticmethod
        @hookimpl
        def tinydiff_register_schedules(register):
            register("constant", lambda num_timesteps, beta=0.02: torch.full((num_timesteps,), beta, dtype=torch.float64))

    host = get_host()
    host.add(Plugin(), "throwaway")
    try:
        s = NoiseSchedule.from_name("constant", 100)
        assert torch.allclose(s.betas, torch.full((100,), 0.02, dtype=torch.float64))
        assert registry("schedule").components["constant"].plugin == "throwaway"
    finally:
        host.remove("throwaway")
    with pytest.raises(TinyDiffError, match="unknown schedule 'constant'"):
        NoiseSchedule.from_name("constant", 100)


def test_a_plugin_that_raises_at_registration_is_isolated() -> None:
    class Broken:
        @staticmethod
        @hookimpl
        def tinydiff_register_schedules(register):
            register("half-done", lambda n: torch.full((n,), 0.01, dtype=torch.float64))
            raise RuntimeError("boom")

    host = get_host()
    host.add(Broken(), "broken")
    with pytest.warns(PluginWarning, match="'broken' failed to register: RuntimeError: boom"):
        names = registry("schedule").names()
    assert "half-done" not in names, "nothing of a failed registration is kept"
    assert "linear" in names
    assert host.plugins["broken"].error.startswith("failed to register")


@pytest.mark.parametrize(
    "name, obj, match",
    [("Bad Name", lambda n: None, "not valid"), ("ok", "not callable", "must be a function")],
)
def test_register_checks_names_and_objects(name, obj, match) -> None:
    class Plugin:
        @staticmethod
        @hookimpl
        def tinydiff_register_samplers(register):
            register(name, obj)

    get_host().add(Plugin(), "checked")
    with pytest.warns(PluginWarning, match=match):
        registry("sampler")


def test_duplicate_names_keep_the_first_with_a_warning() -> None:
    class Clash:
        @staticmethod
        @hookimpl
        def tinydiff_register_schedules(register):
            register("linear", lambda n: torch.full((n,), 0.5, dtype=torch.float64))

    get_host().add(Clash(), "clash")
    with pytest.warns(PluginWarning, match="already provided by 'tinydiff.schedules'"):
        assert registry("schedule").components["linear"].plugin == "tinydiff.schedules"


def test_a_plugin_that_fails_to_import_is_a_warning_and_a_row(tmp_path, monkeypatch) -> None:
    fake_distribution(tmp_path, "tinydiff-broken", "broken", "tinydiff_broken_mod", "raise ImportError('no such thing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(PluginWarning, match="'broken' failed to load: ImportError: no such thing"):
        host = get_host()
    assert host.plugins["broken"].error and host.plugins["broken"].distribution == "tinydiff-broken"
    assert "cosine" in registry("schedule"), "everything else keeps working"


def test_disable_plugins_skips_them(tmp_path, monkeypatch) -> None:
    fake_distribution(tmp_path, "tinydiff-broken", "broken", "tinydiff_broken_mod", "raise ImportError('x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TINYDIFF_DISABLE_PLUGINS", "other, broken")
    host = get_host()
    assert host.plugins["broken"].disabled and host.plugins["broken"].error is None


@pytest.fixture
def extra_schedules_installed(tmp_path, monkeypatch):
    """The example plugin, found through the same entry-point code path `pip install` would give it."""
    fake_distribution(tmp_path, "tinydiff-extra-schedules", "extra-schedules", "tinydiff_extra_schedules")
    monkeypatch.syspath_prepend(str(EXTRA / "src"))
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = (EXTRA / "pyproject.toml").read_text()
    assert 'extra-schedules = "tinydiff_extra_schedules"' in entry, "the fake dist-info mirrors the real entry point"


def test_example_plugin_registers_its_schedules(extra_schedules_installed) -> None:
    host = get_host()
    info = host.plugins["extra-schedules"]
    assert (info.distribution, info.version, info.builtin) == ("tinydiff-extra-schedules", "0.1.0", False)
    assert {"quadratic", "sqrt"} <= set(registry("schedule").names())
    assert info.registered == {"schedule": ["quadratic", "sqrt"]}
    q = NoiseSchedule.from_name("quadratic", 1000)
    assert q.betas[0].item() == pytest.approx(1e-4) and q.betas[-1].item() == pytest.approx(0.02)
    assert (q.alphas_cumprod[1:] < q.alphas_cumprod[:-1]).all()


def test_train_with_the_plugin_schedule(extra_schedules_installed, tmp_path, tiny_config, data_dir) -> None:
    from tinydiff.train import train

    config = tiny_config(steps=4, log_every=2, sample_every=4, checkpoint_every=4)
    config.schedule.name = "quadratic"
    result = train(config, tmp_path / "run")
    saved = json.loads((result.checkpoint / "config.json").read_text())
    assert saved["schedule"]["name"] == "quadratic"
    assert result.step == 4 and result.loss is not None


def test_plugins_cli_lists_plugins_and_errors(extra_schedules_installed, tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from tinydiff.cli import app

    broken = tmp_path / "broken"
    fake_distribution(broken, "tinydiff-broken", "broken", "tinydiff_broken_mod", "raise ImportError('nope')\n")
    monkeypatch.syspath_prepend(str(broken))
    result = CliRunner().invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["extra-schedules"]["registered"] == {"schedule": ["quadratic", "sqrt"]}
    assert rows["extra-schedules"]["status"] == "ok" and rows["extra-schedules"]["version"] == "0.1.0"
    assert rows["broken"]["status"] == "error" and "ImportError: nope" in rows["broken"]["error"]
    assert not any(row["builtin"] for row in rows.values())
    assert "warning: plugin 'broken' failed to load" in result.stderr
    plugins.reset()
    everything = CliRunner().invoke(app, ["plugins", "--all", "--json"])
    assert everything.exit_code == 0 and everything.stderr.count("warning:") == 1
    assert {"tinydiff.schedules", "extra-schedules"} <= {r["name"] for r in json.loads(everything.stdout)}


def test_a_plugin_that_calls_sys_exit_on_import_cannot_take_the_tool_down(tmp_path, monkeypatch, capsys) -> None:
    """`tinydiff plugins` still answers, exit 0, with the plugin as a row in error and one warning line."""
    from tinydiff.cli import main

    fake_distribution(tmp_path, "tinydiff-quitter", "quitter", "tinydiff_quitter_mod", "import sys\nsys.exit(7)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["plugins", "--json"])
    out, err = capsys.readouterr()
    assert info.value.code == 0, err
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["quitter"]["status"] == "error" and rows["quitter"]["error"] == "failed to load: called sys.exit(7)"
    assert err == "warning: plugin 'quitter' failed to load: called sys.exit(7); it is skipped\n"


def test_a_plugin_that_calls_sys_exit_while_registering_is_isolated() -> None:
    class Quitter:
        @staticmethod
        @hookimpl
        def tinydiff_register_samplers(register):
            raise SystemExit(3)

    get_host().add(Quitter(), "quitter")
    with pytest.warns(PluginWarning, match=r"'quitter' failed to register: called sys.exit\(3\)"):
        assert "ddpm" in registry("sampler")


def test_ctrl_c_while_a_plugin_loads_still_stops_the_command(tmp_path, monkeypatch) -> None:
    fake_distribution(tmp_path, "tinydiff-slow", "slow", "tinydiff_slow_mod", "raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        get_host()


@pytest.mark.parametrize("returned, says", [("nan", "non-finite values"), ("inf", "non-finite values"), ("shape", "not images of shape")])
def test_a_plugin_sampler_returning_nan_is_an_error_naming_the_plugin(tmp_path, monkeypatch, capsys, returned, says) -> None:
    from tinydiff.checkpoint import ModelFolderConfig, save_model_folder
    from tinydiff.cli import main
    from tinydiff.config import ModelConfig, ScheduleConfig
    from tinydiff.nn.unet import UNet

    class Broken:
        @staticmethod
        @hookimpl
        def tinydiff_register_samplers(register):
            def broken(denoiser, x_T, schedule, *, steps=None, generator=None, callback=None):
                return x_T[:, :, :4] if returned == "shape" else torch.full_like(x_T, float(returned))

            register("broken", broken)

    cfg = ModelConfig(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[], groups=4, heads=1)
    save_model_folder(tmp_path / "m", ModelFolderConfig(model=cfg, schedule=ScheduleConfig(num_timesteps=50)), UNet(cfg).state_dict())
    monkeypatch.chdir(tmp_path)
    get_host().add(Broken(), "broken-sampler-plugin")
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["sample", "--model", "m", "--sampler", "broken", "--num", "2", "--out", "x.png"])
    err = capsys.readouterr().err
    assert info.value.code == 1
    assert err.startswith("error: sampler 'broken' (from plugin 'broken-sampler-plugin') returned ") and says in err
    assert err.count("\n") == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["m"], "no image is written"


def test_a_plugin_sampler_without_a_spacing_argument_refuses_spacing_and_samples_without_it(tmp_path, monkeypatch, capsys, model_folder) -> None:
    from tinydiff.cli import main

    seen = []

    class Plain:
        @staticmethod
        @hookimpl
        def tinydiff_register_samplers(register):
            def plain(denoiser, x_T, schedule, *, steps=None, generator=None, callback=None):
                seen.append(steps)
                return x_T.clamp(-1, 1)

            register("plain", plain)

    monkeypatch.chdir(tmp_path)
    get_host().add(Plain(), "plain-sampler-plugin")
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["sample", "--model", str(model_folder), "--sampler", "plain", "--spacing", "logsnr", "--num", "2", "--out", "x.png"])
    err = capsys.readouterr().err
    assert info.value.code == 1 and err == "error: sampler 'plain' takes no timestep spacing; drop --spacing or pick a built-in sampler\n"
    assert seen == [] and not list(tmp_path.iterdir())
    try:  # without --spacing the plugin is called as before
        main(["sample", "--model", str(model_folder), "--sampler", "plain", "--num", "2", "--out", "x.png", "--seed", "0"])
    except SystemExit as exc:
        assert exc.code in (0, None), capsys.readouterr().err
    assert seen == [None] and (tmp_path / "x.png").exists()
