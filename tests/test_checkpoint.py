import json

import pytest
import torch

from tinydiff.checkpoint import (
    ModelFolderConfig,
    list_checkpoints,
    load_model_folder,
    resolve_model_ref,
    save_model_folder,
)
from tinydiff.config import ModelConfig, ScheduleConfig
from tinydiff.errors import TinyDiffError
from tinydiff.nn.unet import UNet
from tinydiff.pipeline import Pipeline

TINY = ModelConfig(base_channels=8, channel_mult=[1, 2], num_res_blocks=1, attention_resolutions=[], groups=4, heads=1)


def make_folder(path, cfg=TINY, seed=0):
    torch.manual_seed(seed)
    model = UNet(cfg)
    for p in model.parameters():  # no zero-initialised layers: every tensor should round-trip visibly
        torch.nn.init.normal_(p, std=0.02)
    save_model_folder(path, ModelFolderConfig(model=cfg, schedule=ScheduleConfig(num_timesteps=50)), model.state_dict())
    return model


def test_save_load_round_trip_is_bit_exact(tmp_path) -> None:
    model = make_folder(tmp_path / "m")
    config, loaded = load_model_folder(tmp_path / "m")
    assert config.model == TINY and config.schedule.num_timesteps == 50
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x, t = torch.randn(2, 1, 28, 28), torch.tensor([3, 7])
    assert torch.equal(model.eval()(x, t), loaded(x, t))


def test_saving_replaces_atomically_and_leaves_no_temporaries(tmp_path) -> None:
    make_folder(tmp_path / "m", seed=0)
    make_folder(tmp_path / "m", seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]


def test_fp16_weights_load(tmp_path) -> None:
    model = make_folder(tmp_path / "m")
    save_model_folder(
        tmp_path / "half",
        ModelFolderConfig(model=TINY, schedule=ScheduleConfig(num_timesteps=50)),
        {k: v.half() for k, v in model.state_dict().items()},
    )
    _, loaded = load_model_folder(tmp_path / "half")
    assert next(loaded.parameters()).dtype == torch.float32


def test_config_is_validated_before_tensors(tmp_path) -> None:
    make_folder(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["model"]["base_channels"] = -1
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TinyDiffError, match="model.base_channels"):
        load_model_folder(tmp_path / "m")


def test_wrong_shapes_name_the_tensor(tmp_path) -> None:
    make_folder(tmp_path / "m", cfg=TINY.model_copy(update={"base_channels": 16}))
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["model"]["base_channels"] = 8
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TinyDiffError, match=r"tensor 'time_embed.mlp.0.weight' has shape \(64, 16\), the config expects \(32, 8\)"):
        load_model_folder(tmp_path / "m")


def test_resolve_ref_run_dir_gives_newest_complete_checkpoint(tmp_path) -> None:
    run = tmp_path / "run"
    for step in (10, 20):
        make_folder(run / "checkpoints" / f"step-{step:06d}")
    (run / "checkpoints" / ".tmp-step-000030-xyz").mkdir()  # an interrupted write
    (run / "checkpoints" / "step-000040").mkdir()  # incomplete
    assert [s for s, _ in list_checkpoints(run)] == [10, 20]
    assert resolve_model_ref(str(run)).name == "step-000020"
    assert resolve_model_ref(str(run / "checkpoints" / "step-000010")).name == "step-000010"



def test_without_a_bundled_model_the_default_ref_says_how_to_get_one(monkeypatch) -> None:
    import tinydiff.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "bundled_models", lambda: {})
    with pytest.raises(TinyDiffError, match="no bundled model"):
        resolve_model_ref(None)


def test_pipeline_samples_deterministically(tmp_path) -> None:
    make_folder(tmp_path / "m")
    pipe = Pipeline.from_ref(str(tmp_path / "m"), device="cpu")
    a = pipe.sample(3, seed=7)
    assert a.shape == (3, 28, 28) and a.dtype == torch.uint8
    assert torch.equal(a, pipe.sample(3, seed=7))
    assert not torch.equal(a, pipe.sample(3, seed=8))


def test_a_format_1_folder_with_unnamed_unet_lists_loads_the_same_network(tmp_path) -> None:
    """Model folders written before the UNet had named parts still load, their tensor names mapped."""
    from safetensors.torch import load_file, save_file

    from tinydiff.config import TextConfig
    from tinydiff.nn.unet import legacy_key_map

    cfg = ModelConfig(base_channels=8, channel_mult=[1, 2], num_res_blocks=2, attention_resolutions=[14], groups=4,
                      heads=1, text=TextConfig(dim=16, layers=1, heads=2), cross_attention_resolutions=[14])  # fmt: skip
    model = make_folder(tmp_path / "new", cfg)
    config = ModelFolderConfig(model=cfg, schedule=ScheduleConfig(num_timesteps=50))
    save_model_folder(tmp_path / "new", config, model.state_dict(), model.text_encoder.tokenizer)
    old_names = {new: old for old, new in legacy_key_map(cfg).items()}
    tensors = load_file(str(tmp_path / "new" / "model.safetensors"))
    renamed = {}
    for key, value in tensors.items():
        prefix = max((n for n in old_names if key.startswith(n)), key=len, default="")
        renamed[old_names[prefix] + key[len(prefix):] if prefix else key] = value
    assert {"down.3.1.0.qkv.weight", "down.2.conv.weight", "mid.1.1.q.weight", "up.2.0.conv1.weight", "up.3.conv.weight"} <= set(renamed)
    old = tmp_path / "old"
    old.mkdir()
    save_file(renamed, str(old / "model.safetensors"), metadata={"format": "pt"})
    raw = json.loads((tmp_path / "new" / "config.json").read_text())
    raw["format"] = 1
    raw["schedule"]["num_steps"] = raw["schedule"].pop("num_timesteps")
    (old / "config.json").write_text(json.dumps(raw))
    (old / "vocab.json").write_bytes((tmp_path / "new" / "vocab.json").read_bytes())
    config, loaded = load_model_folder(old)
    assert config.format == 1 and config.schedule.num_timesteps == 50
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
