"""Configuration as pydantic models (``extra="forbid"``), and presets as TOML files.

A training run resolves its config in layers: the preset (``presets/<name>.toml``),
then ``--config FILE.toml``, then command-line flags. Every field says why it has
its default. Names (schedule, blocks) are checked against the plugin registries
when the run starts, not here, so this module never imports torch.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import TinyDiffError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_PRESET = "laptop"
MAX_SEED = 2**32 - 1  # seeds are 0 to 4294967295, as in NumPy
# `[train]` keys a resumed run may change (everything else is the run's own config): `--resume`, and a sweep run again
RESUMABLE_TRAIN_KEYS = frozenset({"steps", "max_minutes", "sample_every", "checkpoint_every", "device", "data_dir",
                                  "eval_every", "keep_checkpoints", "trackers"})  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class BlockNames(_Strict):
    """Registry names of the UNet's building blocks; swap one to try a new block."""

    res: str = "resblock"  # residual block: (in_ch, out_ch, *, emb_channels, dropout, groups)
    down: str = "downsample"  # halves the resolution: (channels)
    up: str = "upsample"  # doubles the resolution: (channels)
    attention: str = "attention"  # self-attention: (channels, *, heads, groups)
    cross_attention: str = "cross_attention"  # attends to text tokens: (channels, *, context_dim, heads, groups)


class TextConfig(_Strict):
    """The text encoder inside the UNet (milestone 4: text-to-image)."""

    encoder: str = "tinytext"  # registry name of the text encoder
    dim: int = Field(128, gt=0)  # width of its token embeddings
    layers: int = Field(2, gt=0)  # transformer layers: prompts are short and simple
    heads: int = Field(4, gt=0)  # attention heads; must divide dim
    max_length: int = Field(16, gt=1)  # <bos> plus up to 15 words; longer prompts are cut with a warning


class ModelConfig(_Strict):
    """The UNet (Ronneberger et al. 2015, as used by Ho et al. 2020)."""

    image_size: int = Field(28, gt=0)  # MNIST digits are 28x28
    in_channels: int = Field(1, gt=0)  # grayscale
    base_channels: int = Field(32, gt=0)  # width of the first level; MNIST needs little
    channel_mult: list[int] = Field(default_factory=lambda: [1, 2, 2], min_length=1)  # per level: 28, 14, 7
    num_res_blocks: int = Field(2, gt=0)  # residual blocks per level on the way down
    attention_resolutions: list[int] = Field(default_factory=lambda: [7])  # attention only where it is cheap
    heads: int = Field(4, gt=0)  # attention heads
    groups: int = Field(8, gt=0)  # GroupNorm groups; must divide every level's width
    dropout: float = Field(0.0, ge=0.0, lt=1.0)  # MNIST rarely overfits in the budgets we train
    time_embedding: bool = True  # milestone 2: sinusoidal timestep embeddings (Vaswani et al. 2017)
    resample: bool = True  # milestone 3: down/up-sampling between levels
    text: TextConfig | None = None  # milestone 4: condition on a prompt; None: unconditional
    cross_attention_resolutions: list[int] = Field(default_factory=lambda: [14, 7])  # where pixels read the prompt
    blocks: BlockNames = Field(default_factory=BlockNames)


class ScheduleConfig(_Strict):
    """The forward process: which betas, over how many steps."""

    name: str = "linear"  # registry name; linear as in Ho et al. (2020), cosine is the usual upgrade
    # T, the diffusion timesteps, as in Ho et al. (2020); "num_steps" is read too (model folders of format 1)
    num_timesteps: int = Field(1000, gt=0, le=100_000, validation_alias=AliasChoices("num_timesteps", "num_steps"))
    options: dict[str, float] = Field(default_factory=dict)  # keyword arguments of the schedule function


class DiffusionConfig(_Strict):
    """What the network predicts."""

    objective: Literal["epsilon", "v", "x0"] = "epsilon"  # epsilon: Ho et al. 2020; v: Salimans & Ho 2022
    min_snr_gamma: float | None = Field(None, gt=0)  # Min-SNR-gamma loss weighting (Hang et al. 2023); None: uniform


class TrainConfig(_Strict):
    """The training loop (see ``tinydiff.train``)."""

    steps: int = Field(20_000, gt=0)  # optimizer steps
    batch_size: int = Field(64, gt=0)  # images per step; 64 keeps a CPU step short
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)  # AdamW peak; stable for these small UNets, digits by step 500 on MNIST
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)  # decoupled; EMA already regularises
    warmup_steps: int = Field(200, ge=0)  # linear warm-up avoids early instability
    lr_schedule: Literal["constant", "cosine"] = "cosine"  # decay after warm-up
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # cosine decays to this fraction of lr
    grad_clip: float = Field(1.0, gt=0, allow_inf_nan=False)  # max global gradient norm
    ema_decay: float = Field(0.999, ge=0, lt=1)  # EMA of weights, what sampling uses
    # model init, data order and noise all derive from it; 32 bits, so that every seed derived from it fits torch's
    seed: int = Field(0, ge=0, le=MAX_SEED)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: cuda when present
    data_dir: str | None = None  # folder holding MNIST/raw; default TINYDIFF_DATA_DIR, else a cache
    log_every: int = Field(50, gt=0)  # steps between metrics.jsonl lines
    sample_every: int = Field(250, gt=0)  # steps between sample snapshots: enough for an evolution sheet
    checkpoint_every: int = Field(1000, gt=0)  # steps between checkpoints
    keep_checkpoints: int | None = Field(None, ge=1)  # keep only the newest K checkpoints (None: keep all)
    sample_num: int = Field(16, gt=0, le=256)  # images per snapshot, always the same seeds
    # snapshots are drawn as `tinydiff sample` draws (None: its default sampler, steps and guidance)
    sample_sampler: str | None = None
    sample_steps: int | None = Field(None, gt=0)
    sample_guidance: float | None = Field(None, ge=0, allow_inf_nan=False)
    eval_every: int | None = Field(None, gt=0)  # steps between `tinydiff eval` figures in metrics.jsonl (None: off)
    eval_num_per_digit: int = Field(10, ge=2)  # small: a quick trend, not the final figure
    eval_sampler: str | None = None  # None: `tinydiff eval`'s default sampler, few steps and cheap
    eval_steps: int | None = Field(None, gt=0)
    max_minutes: float | None = Field(None, gt=0)  # stop (with a checkpoint) after this much training time
    scale_augment: float = Field(0.0, ge=0, le=1)  # share of images rescaled by 0.6-1.3x, so "small"/"large" occur
    channels_last: bool = False  # NHWC memory layout for the convolutions (docs/performance.md)
    # bf16 autocast on the CPU too (always on for CUDA): 1.5x to 2.2x images/s on a CPU with bf16 matrix
    # units (Intel AMX), slower on ones without and with channels_last; results then differ between such CPUs (docs/performance.md)
    cpu_bf16: bool = False
    compile: bool = False  # torch.compile the training step's network: pays back its compile time on long GPU runs
    # trackers beside metrics.jsonl (always written): csv, tensorboard, or a plugin's (`tinydiff plugins --all`)
    trackers: list[str] = Field(default_factory=list)


class Config(_Strict):
    """Everything a training run needs; saved as the run's ``config.json``."""

    preset: str | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)


class SamplingOptions(_Strict):
    """How a model is sampled. The defaults are TinyDiff's measured choices; ``Pipeline`` alone resolves them."""

    # DPM-Solver++(2M) (Lu et al. 2022): as good at 10 steps as 1000-step DDPM on the bundled model,
    # in a hundredth of the network evaluations (docs/performance.md#sampler-and-steps)
    sampler: str = "dpm++"
    steps: int | None = Field(None, gt=0)  # sampler steps; None: the sampler's own (ddpm all T, ddim 50, dpm++ 10)
    # the timesteps those steps visit: uniform, trailing, logsnr or karras (tinydiff.samplers.timestep_grid);
    # None: the sampler's own grid (the built-ins: tinydiff.samplers.DEFAULT_SPACING)
    spacing: str | None = None
    # Classifier-free guidance weight (Ho & Salimans 2022), 1 for none. Measured on the bundled model
    # (docs/text-to-image.md#classifier-free-guidance): 1.5 kept prompt accuracy at 99.5% with MNIST-FD
    # near the real-data floor; 3.0 reached 100% at 3.5x the floor (more guidance, less variety).
    guidance: float = Field(1.5, ge=0, allow_inf_nan=False)
    # Guidance only at noise levels sigma = sqrt((1 - alpha_bar) / alpha_bar) in (lo, hi], the interval of
    # Kynkaanniemi et al. (2024): lower MNIST-FD than guiding every step, and a quarter less sampling time,
    # as the other steps run one forward pass instead of two (docs/text-to-image.md). None: every step.
    guidance_interval: tuple[float, float] | None = (0.28, 5.42)

    @field_validator("guidance_interval")
    @classmethod
    def _ordered(cls, interval: tuple[float, float] | None) -> tuple[float, float] | None:
        if interval is not None and not 0.0 <= interval[0] < interval[1]:  # also false for NaN
            raise ValueError("the guidance interval needs 0 <= lo < hi")
        return interval

    def merged(self, **given: Any) -> "SamplingOptions":
        """These options with the ``given`` ones that are not None put in; ``guidance_interval="all"`` is every step."""
        update = {k: v for k, v in given.items() if v is not None}
        if update.get("guidance_interval") == "all":
            update["guidance_interval"] = None
        return SamplingOptions.model_validate(self.model_dump() | update)


def parse_guidance_interval(text: str | None) -> tuple[float, float] | str | None:
    """``--guidance-interval``: "LO,HI" (sigma bounds) or "all" (every step); None when not given."""
    if text is None or text.strip().lower() == "all":
        return None if text is None else "all"
    parts = text.split(",")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise TinyDiffError(
            f"--guidance-interval takes LO,HI (noise levels, e.g. 0.28,5.42) or 'all', got {text!r}"
        ) from None
    if not (0.0 <= lo < hi) or lo != lo or hi != hi:
        raise TinyDiffError(f"--guidance-interval needs 0 <= LO < HI, got {text!r}")
    return lo, hi


# -- presets and TOML -----------------------------------------------------------


def preset_names() -> list[str]:
    files = resources.files("tinydiff").joinpath("presets").iterdir()
    return sorted(f.name[: -len(".toml")] for f in files if f.name.endswith(".toml"))


def _read_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TinyDiffError(f"{where} is not valid TOML: {exc}") from None


def load_preset(name: str) -> dict[str, Any]:
    """The raw settings of a bundled preset."""
    from .plugins import unknown_name_message

    names = preset_names()
    if name not in names:
        raise TinyDiffError(unknown_name_message("preset", name, names))
    text = resources.files("tinydiff").joinpath("presets", f"{name}.toml").read_text(encoding="utf-8")
    return _read_toml(text, f"preset {name!r}")


def load_toml_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise TinyDiffError(f"config file {str(path)!r} does not exist; pass a TOML file to --config")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TinyDiffError(f"cannot read config file {str(path)!r}: {exc}") from None
    return _read_toml(text, f"config file {str(path)!r}")


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (tables merge, values replace)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 0.001}}`` -> ``{"train.lr": 0.001}``: one dotted key per value (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def resolve_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Preset, then TOML file, then overrides (``{"train": {"steps": 10}}``), validated."""
    file_data = load_toml_file(config_file) if config_file is not None else {}
    name = preset or file_data.get("preset") or DEFAULT_PRESET  # a `preset = "..."` line in the file picks the base
    if not isinstance(name, str):
        raise TinyDiffError(f"invalid config: preset must be a preset name, got {name!r}")
    data = merge(merge(load_preset(name), file_data), overrides or {})
    data["preset"] = name
    return Config.model_validate(data)


def format_validation_error(exc: ValidationError, source: str = "config") -> str:
    """One line from a pydantic error: where, what, and the offending value."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key (check its spelling; see docs/cli.md for the keys)"
    value = err.get("input")
    shown = "" if err["type"] in ("extra_forbidden", "missing") else f" (got {value!r})"
    more = len(exc.errors()) - 1
    tail = f"; and {more} more problem{'s' if more > 1 else ''}" if more else ""
    return f"invalid {source}: {loc}: {msg}{shown}{tail}"
