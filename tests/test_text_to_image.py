"""Text-to-image: conditioning in the UNet, classifier-free guidance, training on captions, prompts on the CLI."""

import json

import numpy as np
import pytest
import torch
from conftest import read_gif, read_npz
from typer.testing import CliRunner

from tinydiff.checkpoint import ModelFolderConfig, load_model_folder, save_model_folder
from tinydiff.config import ModelConfig, ScheduleConfig, TextConfig, resolve_config
from tinydiff.diffusion import EpsilonPredictor
from tinydiff.errors import TinyDiffError
from tinydiff.nn.unet import UNet
from tinydiff.schedules import NoiseSchedule

TEXT_MODEL = ModelConfig(base_channels=16, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[14],
                         cross_attention_resolutions=[14, 28], groups=4, heads=2, text=TextConfig(dim=32, layers=1, heads=2))  # fmt: skip


def randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Fill zero-initialised layers, so every path (cross-attention included) affects the output."""
    torch.manual_seed(0)
    for p in model.parameters():
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.05)
    return model.eval()


def test_stage4_preset_is_stage3_plus_text() -> None:
    s3, s4 = resolve_config("stage3").model, resolve_config("stage4").model
    assert s4.text is not None and s4.text.encoder == "tinytext"
    assert s4.cross_attention_resolutions == [14, 7]
    assert s4.model_copy(update={"text": None}) == s3


def test_the_prompt_changes_the_prediction_and_padding_does_not() -> None:
    model = randomised(UNet(TEXT_MODEL))
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([100, 100])
    with torch.no_grad():
        seven = model(x, t, model.encode_text(["a handwritten seven"] * 2))
        three = model(x, t, model.encode_text(["a handwritten three"] * 2))
        mixed = model(x, t, model.encode_text(["a handwritten seven", "a bold, thin, large, small handwritten digit three"]))
    assert not torch.allclose(seven, three, atol=1e-4)
    assert torch.allclose(mixed[0], seven[0], atol=1e-5), "a longer prompt beside it must not change the first"


def test_guidance_one_is_the_conditional_prediction_and_cfg_is_batched() -> None:
    model = randomised(UNet(TEXT_MODEL))
    s = NoiseSchedule.from_name("linear", 100)
    x, t = torch.randn(3, 1, 28, 28), torch.tensor([5, 50, 95])
    with torch.no_grad():
        cond, uncond = model.encode_text(["a 7", "a 3", "a 1"]), model.encode_text([""] * 3)
        plain = EpsilonPredictor(model, s, context=cond)(x, t)
        assert torch.equal(EpsilonPredictor(model, s, context=cond, uncond_context=uncond, guidance=1.0)(x, t), plain)
        eps_u = EpsilonPredictor(model, s, context=uncond)(x, t)
        counting = EpsilonPredictor(model, s, context=cond, uncond_context=uncond, guidance=4.0)
        guided = counting(x, t)
    assert torch.allclose(guided, eps_u + 4.0 * (plain - eps_u), atol=1e-4)
    assert counting.evaluations == 1, "conditional and unconditional predictions share one forward pass"


def test_guidance_interval_guides_only_the_noise_levels_inside_it() -> None:
    model = randomised(UNet(TEXT_MODEL))
    s = NoiseSchedule.from_name("linear", 100)
    sigma = ((1 - s.alphas_cumprod) / s.alphas_cumprod).sqrt()
    lo, hi = float(sigma[20]), float(sigma[60])  # guided: 20 < t <= 60
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        cond, uncond = model.encode_text(["a 7", "a 3", "a 1"]), model.encode_text([""] * 3)
        for steps in ([10, 10, 10], [40, 40, 40], [90, 90, 90], [10, 40, 90]):
            t = torch.tensor(steps)
            plain = EpsilonPredictor(model, s, context=cond)(x, t)
            everywhere = EpsilonPredictor(model, s, context=cond, uncond_context=uncond, guidance=3.0)(x, t)
            limited = EpsilonPredictor(model, s, context=cond, uncond_context=uncond, guidance=3.0, guidance_interval=(lo, hi))
            out = limited(x, t)
            for i, step in enumerate(steps):
                expected = everywhere[i] if 20 < step <= 60 else plain[i]
                assert torch.allclose(out[i], expected, atol=1e-5), (steps, i)
            assert limited.evaluations == 1
    assert not torch.allclose(everywhere[1], plain[1], atol=1e-3), "guidance must change the prediction to be tested"


def test_guidance_interval_parsing() -> None:
    from tinydiff.config import SamplingOptions, parse_guidance_interval

    assert parse_guidance_interval(None) is None and SamplingOptions().guidance_interval == (0.28, 5.42)
    assert parse_guidance_interval("all") == "all" and parse_guidance_interval(" ALL ") == "all"
    assert parse_guidance_interval("0.5,3") == (0.5, 3.0)
    assert parse_guidance_interval("0,inf") == (0.0, float("inf"))
    for bad in ("", "1", "1,2,3", "a,b", "3,1", "-1,2", "nan,2", "1,1"):
        with pytest.raises(TinyDiffError, match="--guidance-interval"):
            parse_guidance_interval(bad)


def test_text_model_folder_round_trip_with_vocab(tmp_path) -> None:
    model = randomised(UNet(TEXT_MODEL))
    cfg = ModelFolderConfig(model=TEXT_MODEL, schedule=ScheduleConfig(num_timesteps=50))
    save_model_folder(tmp_path / "m", cfg, model.state_dict(), model.text_encoder.tokenizer)
    vocab = json.loads((tmp_path / "m" / "vocab.json").read_text())
    assert {"seven", "7", "bold", "leaning", "right"} <= set(vocab["tokens"])
    _, loaded = load_model_folder(tmp_path / "m")
    x, t = torch.randn(1, 1, 28, 28), torch.tensor([10])
    with torch.no_grad():
        assert torch.equal(model(x, t, model.encode_text(["a 4"])), loaded(x, t, loaded.encode_text(["a 4"])))
    (tmp_path / "m" / "vocab.json").unlink()
    with pytest.raises(TinyDiffError, match="vocab.json is missing"):
        load_model_folder(tmp_path / "m")


def test_unconditional_models_refuse_prompts() -> None:
    model = UNet(ModelConfig(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[], groups=4))
    with pytest.raises(TinyDiffError, match="unconditional"):
        model.encode_text(["a seven"])


# -- trained on real MNIST captions, driven from the command line ------------------------------

runner = CliRunner()


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, data_dir):
    root = tmp_path_factory.mktemp("t2i")
    toml = root / "tiny.toml"
    toml.write_text(
        'preset = "stage3"\n'
        "[model]\nbase_channels = 16\nchannel_mult = [1, 2]\nnum_res_blocks = 1\nattention_resolutions = [14]\n"
        "cross_attention_resolutions = [14]\ngroups = 4\nheads = 2\n[model.text]\ndim = 32\nlayers = 1\nheads = 2\n"
        "[schedule]\nnum_steps = 50\n[train]\nlr = 2e-3\nwarmup_steps = 2\nlog_every = 5\nsample_num = 4\nsample_steps = 5\n"
    )
    run = root / "T"
    result = runner.invoke(app_(), ["train", "--config", str(toml), "--conditioning", "text", "--steps", "10",
                                    "--batch-size", "16", "--run-dir", str(run), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return run


def app_():
    from tinydiff.cli import app

    return app


def sample(run, tmp_path, *args):
    out = tmp_path / "s.npz"
    result = runner.invoke(app_(), ["sample", *args, "--model", str(run), "--num", "2", "--steps", "10",
                                    "--seed", "1", "--out", str(out), "--no-preview"])  # fmt: skip
    return result, (read_npz(out) if result.exit_code == 0 else None)


def test_training_on_captions_makes_a_text_model(text_run) -> None:
    info = json.loads(runner.invoke(app_(), ["inspect", str(text_run), "--json"]).stdout)
    assert info["model"]["text_encoder"]["encoder"] == "tinytext" and info["model"]["text_encoder"]["vocab_size"] > 50
    assert (text_run / "checkpoints" / "step-000010" / "vocab.json").is_file()


def test_samples_from_one_seed_differ_by_prompt(text_run, tmp_path) -> None:
    _, seven = sample(text_run, tmp_path, "a handwritten seven")
    _, again = sample(text_run, tmp_path, "a handwritten seven")
    _, three = sample(text_run, tmp_path, "a handwritten three")
    assert np.array_equal(seven["images"], again["images"])
    assert not np.array_equal(seven["images"], three["images"])
    assert list(seven["prompts"]) == ["a handwritten seven"] * 2


def test_prompt_naming_no_digit_samples_unconditionally_with_a_warning(text_run, tmp_path) -> None:
    result, cat = sample(text_run, tmp_path, "a cat")
    assert result.exit_code == 0 and "names no digit; sampling unconditionally" in result.stderr
    _, empty = sample(text_run, tmp_path, "")
    assert np.array_equal(cat["images"], empty["images"])


def test_prompt_naming_two_digits_is_one_error_line(text_run, tmp_path) -> None:
    result, _ = sample(text_run, tmp_path, "a 3 or a five")
    assert result.exit_code == 1
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "error: prompt 'a 3 or a five' names 3 and 5 separately; an image holds one number: did you mean 'the number 35'?"
    ]
    assert not (tmp_path / "s.npz").exists()


def test_long_prompts_are_truncated_and_unknown_words_named(text_run, tmp_path) -> None:
    long = "a seven " + "very " * 5000
    result, images = sample(text_run, tmp_path, long)
    assert result.exit_code == 0 and "the rest is ignored" in result.stderr
    assert "unknown words, read as an unknown token: very" in result.stderr
    _, short = sample(text_run, tmp_path, "a seven " + "very " * 14)
    assert np.array_equal(images["images"], short["images"]), "only the first 15 words count"


def test_non_printable_characters_are_ignored(text_run, tmp_path) -> None:
    _, clean = sample(text_run, tmp_path, "a bold seven")
    _, dirty = sample(text_run, tmp_path, "a\x00 bold\x1b seven\x07")
    assert np.array_equal(clean["images"], dirty["images"])


def test_prompts_file_gives_num_images_per_prompt_one_row_each(text_run, tmp_path) -> None:
    (tmp_path / "p.txt").write_text("a handwritten seven\n\nThe digit 3.\n")
    out = tmp_path / "grid.png"
    result = runner.invoke(app_(), ["sample", "--prompts-file", str(tmp_path / "p.txt"), "--model", str(text_run),
                                    "--num", "3", "--steps", "5", "--seed", "4", "--out", str(out), "--no-preview"])  # fmt: skip
    assert result.exit_code == 0, result.output
    from tinydiff.images import decode_png

    assert decode_png(out.read_bytes()).shape == (4 * (2 + 2 * 30), 4 * (2 + 3 * 30))  # one row per prompt, 4x
    with_gif = runner.invoke(app_(), ["sample", "--prompts-file", str(tmp_path / "p.txt"), "--model", str(text_run),
                                      "--num", "3", "--steps", "5", "--seed", "4", "--scale", "1", "--out", str(out),
                                      "--gif", str(tmp_path / "rows.gif"), "--no-preview"])  # fmt: skip
    assert with_gif.exit_code == 0, with_gif.output
    from tinydiff.animation import CELL_GAP, label_height

    frames, _ = read_gif((tmp_path / "rows.gif").read_bytes())
    assert len(frames) == 6 and frames.shape[1] == label_height(1) + CELL_GAP + 2 * (28 + CELL_GAP), "one row per prompt"
    np.testing.assert_array_equal(frames[-1, label_height(1) + CELL_GAP :][:28, CELL_GAP : CELL_GAP + 28],
                                  decode_png(out.read_bytes())[2:30, 2:30])  # fmt: skip
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe a seven")
    bad = runner.invoke(app_(), ["sample", "--prompts-file", str(tmp_path / "bad.txt"), "--model", str(text_run)])
    assert bad.exit_code == 1 and "not UTF-8" in bad.stderr


def test_a_prompt_to_an_unconditional_model_is_an_error(tmp_path) -> None:
    cfg = ModelConfig(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[], groups=4)
    save_model_folder(tmp_path / "u", ModelFolderConfig(model=cfg, schedule=ScheduleConfig(num_timesteps=50)), UNet(cfg).state_dict())
    result = runner.invoke(app_(), ["sample", "a seven", "--model", str(tmp_path / "u"), "--out", str(tmp_path / "x.png")])
    assert result.exit_code == 1 and "unconditional" in result.stderr and not (tmp_path / "x.png").exists()


def test_guidance_interval_on_the_command_line(text_run, tmp_path) -> None:
    default, images = sample(text_run, tmp_path, "a handwritten seven")
    every, images_every = sample(text_run, tmp_path, "a handwritten seven", "--guidance-interval", "all")
    assert default.exit_code == 0 and every.exit_code == 0, default.output + every.output
    assert not np.array_equal(images["images"], images_every["images"]), "the interval must change the samples"
    unguided, _ = sample(text_run, tmp_path, "--guidance-interval", "all")  # no prompt: nothing to guide
    assert unguided.exit_code == 0 and "have no effect without a prompt" in unguided.stderr


def test_contradictory_style_words_are_an_error(text_run, tmp_path) -> None:
    result, _ = sample(text_run, tmp_path, "a thin bold seven")
    assert result.exit_code == 1 and result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1


def test_eval_json_schema_for_a_text_model(text_run) -> None:
    result = runner.invoke(app_(), ["eval", "--model", str(text_run), "--num-per-digit", "2", "--steps", "3", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report) >= {"model", "conditional", "sampler", "steps", "nfe", "guidance", "num_images", "seconds",
                           "mnist_fd", "mnist_fd_floor", "fd_ratio", "class_histogram", "accuracy", "per_digit_accuracy",
                           "min_digit_accuracy", "guidance_interval"}  # fmt: skip
    assert report["conditional"] is True and report["nfe"] == 3 and report["num_images"] == 20
    assert report["guidance_interval"] == [0.28, 5.42]
    assert sorted(report["per_digit_accuracy"]) == [str(d) for d in range(10)]
    assert all(0.0 <= a <= 1.0 for a in report["per_digit_accuracy"].values())
    assert report["min_digit_accuracy"] == min(report["per_digit_accuracy"].values())
    assert sum(report["class_histogram"]) == 20 and report["mnist_fd"] > 0 and report["mnist_fd_floor"] > 0
    table = runner.invoke(app_(), ["eval", "--model", str(text_run), "--num-per-digit", "2", "--steps", "2"])
    assert table.exit_code == 0 and "prompt accuracy" in table.stdout and "MNIST-FD" in table.stdout
    every = runner.invoke(app_(), ["eval", "--model", str(text_run), "--num-per-digit", "2", "--steps", "2",
                                   "--guidance-interval", "all", "--json"])  # fmt: skip
    assert every.exit_code == 0 and json.loads(every.stdout)["guidance_interval"] is None


def test_eval_of_an_unconditional_model_reports_fd_and_histogram_only(tmp_path) -> None:
    cfg = ModelConfig(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[], groups=4)
    save_model_folder(tmp_path / "u", ModelFolderConfig(model=cfg, schedule=ScheduleConfig(num_timesteps=50)), UNet(cfg).state_dict())
    result = runner.invoke(app_(), ["eval", "--model", str(tmp_path / "u"), "--num-per-digit", "2", "--sampler", "ddim",
                                    "--steps", "2", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["conditional"] is False and "accuracy" not in report and report["guidance"] is None
    bad = runner.invoke(app_(), ["eval", "--model", str(tmp_path / "u"), "--num-per-digit", "1"])
    assert bad.exit_code == 2 and "--num-per-digit" in bad.stderr  # a usage error: the option's range is 2 to 1000


def test_eval_style_reports_ink_and_slant_of_paired_style_prompts(text_run) -> None:
    result = runner.invoke(app_(), ["eval", "--model", str(text_run), "--num-per-digit", "2", "--steps", "2", "--style", "--json"])
    assert result.exit_code == 0, result.output
    style = json.loads(result.stdout)["style"]
    assert style["num_per_prompt"] == 10  # half of --num-per-digit, for each of the ten digits
    assert set(style["groups"]) == {"bold", "thin", "leaning right", "leaning left", "large", "small"}
    g = style["groups"]
    assert style["bold_thin_ink_ratio"] == pytest.approx(g["bold"]["ink"] / g["thin"]["ink"])
    assert style["slant_right"] == g["leaning right"]["slant"] and style["slant_left"] == g["leaning left"]["slant"]
    assert style["large_small_extent_ratio"] == pytest.approx(g["large"]["extent"] / g["small"]["extent"])
    assert all(grp["ink"] > 0 and 0 <= grp["extent"] <= 28 and 0 <= grp["accuracy"] <= 1 for grp in g.values())
    table = runner.invoke(app_(), ["eval", "--model", str(text_run), "--num-per-digit", "2", "--steps", "2", "--style"])
    assert table.exit_code == 0 and "bold / thin" in table.stdout and "large / small" in table.stdout


def test_eval_style_of_an_unconditional_model_is_one_line_error(tmp_path) -> None:
    cfg = ModelConfig(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[], groups=4)
    save_model_folder(tmp_path / "u", ModelFolderConfig(model=cfg, schedule=ScheduleConfig(num_timesteps=50)), UNet(cfg).state_dict())
    result = runner.invoke(app_(), ["eval", "--model", str(tmp_path / "u"), "--style"])
    assert result.exit_code == 1 and "--style needs a text model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
