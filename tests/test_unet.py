import pytest
import torch

from tinydiff.config import ModelConfig, preset_names, resolve_config
from tinydiff.errors import TinyDiffError
from tinydiff.nn.embeddings import sinusoidal_embedding
from tinydiff.nn.unet import UNet, count_parameters


@pytest.mark.parametrize("preset", ["stage1", "stage2", "stage3"])
def test_every_preset_builds_and_keeps_the_image_shape(preset: str) -> None:
    cfg = resolve_config(preset).model
    model = UNet(cfg)
    x = torch.randn(2, 1, 28, 28)
    assert model(x, torch.tensor([0, 999])).shape == x.shape


def test_presets_are_the_milestone_story() -> None:
    assert {"stage1", "stage2", "stage3"} <= set(preset_names())
    s1, s2, s3 = (resolve_config(p) for p in ("stage1", "stage2", "stage3"))
    assert (s1.model.time_embedding, s1.model.resample) == (False, False)
    assert (s2.model.time_embedding, s2.model.resample) == (True, False)
    assert (s3.model.time_embedding, s3.model.resample) == (True, True)
    assert s1.schedule.name == s2.schedule.name == s3.schedule.name == "linear"
    assert resolve_config(None).preset == "laptop", "laptop (a text model) is the default"
    assert resolve_config(None).model.text is not None


def test_stage1_ignores_the_timestep_and_stage2_uses_it() -> None:
    x = torch.randn(1, 1, 28, 28)
    torch.manual_seed(0)
    bare = UNet(resolve_config("stage1").model)
    torch.manual_seed(0)
    timed = UNet(resolve_config("stage2").model)
    for m in (bare, timed):  # zero-initialised output layers would hide any difference
        torch.nn.init.normal_(m.conv_out.weight, std=0.1)
        for p in m.parameters():
            if p.ndim == 4 and p.abs().sum() == 0:
                torch.nn.init.normal_(p, std=0.05)
    assert bare.time_embed is None
    assert torch.equal(bare(x, torch.tensor([1])), bare(x, torch.tensor([900])))
    assert not torch.allclose(timed(x, torch.tensor([1])), timed(x, torch.tensor([900])))


def test_stage3_downsamples_to_7x7_and_has_attention() -> None:
    model = UNet(resolve_config("stage3").model)
    seen = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append((type(mod).__name__, o.shape[-1])))
             for m in model.modules() if type(m).__name__ in ("SelfAttention", "Downsample", "Upsample")]  # fmt: skip
    model(torch.randn(1, 1, 28, 28), torch.tensor([5]))
    for h in hooks:
        h.remove()
    assert ("Downsample", 7) in seen and ("Upsample", 28) in seen
    assert {res for name, res in seen if name == "SelfAttention"} == {7}


def test_blocks_are_looked_up_by_name() -> None:
    cfg = ModelConfig(blocks={"attention": "atention"})
    with pytest.raises(TinyDiffError, match="unknown block 'atention'.*did you mean 'attention'"):
        UNet(cfg)


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"groups": 5}, "groups"),
        ({"channel_mult": [1, 2, 2, 2]}, "cannot be halved"),
        ({"attention_resolutions": [5]}, "attention_resolutions"),
        ({"heads": 3}, "heads"),
    ],
)
def test_impossible_architectures_are_explained(fields: dict, match: str) -> None:
    with pytest.raises(TinyDiffError, match=match):
        UNet(ModelConfig(**fields))


def test_sinusoidal_embedding() -> None:
    e = sinusoidal_embedding(torch.tensor([0, 1, 500]), 32)
    assert e.shape == (3, 32)
    assert torch.allclose(e[0, :16], torch.ones(16)) and torch.allclose(e[0, 16:], torch.zeros(16))
    assert not torch.allclose(e[1], e[2])


def test_parameter_count_is_moderate() -> None:
    assert 0.5e6 < count_parameters(UNet(resolve_config("stage3").model)) < 5e6


def test_cross_attention_shapes_and_padding_mask() -> None:
    from tinydiff.nn.blocks import CrossAttention

    torch.manual_seed(0)
    block = CrossAttention(16, context_dim=12, heads=2, groups=4)
    torch.nn.init.normal_(block.proj.weight, std=0.1)  # the zero-initialised output would hide the attention
    x = torch.randn(2, 16, 7, 7)
    context = torch.randn(2, 5, 12)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    out = block(x, context, mask)
    assert out.shape == x.shape
    changed = context.clone()
    changed[0, 3:] = 100.0  # padding of the first item: must not matter
    assert torch.allclose(block(x, changed, mask)[0], out[0], atol=1e-6)
    changed[0, 1] = 100.0  # a real token: must matter
    assert not torch.allclose(block(x, changed, mask)[0], out[0], atol=1e-3)
