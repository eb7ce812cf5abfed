"""GPU training throughput: TinyDiff's training step against the diffusers 4.0 M baseline, same run.

    pip install -e ".[bench]"
    python benchmarks/gpu_throughput.py                     # on a CUDA machine: throughput table, then time to quality
    python benchmarks/gpu_throughput.py --skip-quality      # throughput only
    python benchmarks/gpu_throughput.py --smoke             # CPU, tiny sizes: checks the plumbing in seconds

Arms, each timed over ``--seconds`` after warm-up, with a synchronisation only at the ends:

- ``diffusers``: ``UNet2DModel`` 32/64/128, two layers per block (4.0 M parameters), class-
  conditional, a full loop (bf16 autocast, AdamW, gradient clipping, EMA) at ``--batch``;
- ``tinydiff eager``: :meth:`tinydiff.train.Trainer.train_step` of the ``gpu`` preset (4.1 M) at the
  same batch: data on the GPU, fused AdamW, one-kernel EMA, no host sync;
- ``tinydiff +channels_last``, ``+compile``, ``+compile`` in "reduce-overhead" mode (CUDA
  graphs) and ``+batch 1024`` (lr scaled): the levers in turn.

Images/s, the ratio to diffusers, and MFU: FLOPs per image from ``torch.utils.flop_counter``
over one forward and backward, against the chip's dense bf16 peak. Then (unless
``--skip-quality``) the time to quality: ``tinydiff train --preset gpu --max-minutes 1``, then
``tinydiff eval`` at 20 network evaluations (targets: >= 99% prompt accuracy, FD <= 1.2x floor).
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from _common import (  # noqa: E402
    NULL_LABEL,
    ClassConditional,
    check_finite,
    count_parameters,
    diffusers_unet,
    fail,
    machine,
    require_diffusers,
    write_json,
)

PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12, "4090": 165e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def flops_per_image(step_forward_backward: Callable[[], None], batch: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step_forward_backward()
    return counter.get_total_flops() / batch


def time_loop(step: Callable[[], Any], device: torch.device, seconds: float, warmup: int) -> tuple[float, int]:
    """Steps per second over at least ``seconds``; the device is synchronised only before and after."""
    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start, n = time.perf_counter(), 0
    while True:
        for _ in range(5):
            step()
        n += 5
        sync()
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed, n


# -- the arms ---------------------------------------------------------------------
def diffusers_arm(device: torch.device, batch: int, size: str) -> tuple[Callable[[], Any], Callable[[], None], torch.nn.Module]:
    from tinydiff.data import load_mnist, to_model_range
    from tinydiff.schedules import NoiseSchedule
    from tinydiff.train import update_ema

    torch.manual_seed(0)
    model = ClassConditional(diffusers_unet(size)).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    images, labels = load_mnist(None, split="train")
    images, labels = images.to(device), labels.to(device)
    sched = NoiseSchedule.from_name("linear", 1000)
    a_all, s_all = sched.sqrt_alphas_cumprod.float().to(device), sched.sqrt_one_minus_alphas_cumprod.float().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    state = {"step": 0}

    def loss_fn() -> torch.Tensor:
        idx = torch.randint(0, len(images), (batch,), device=device)
        x0 = to_model_range(images[idx])
        y = torch.where(torch.rand(batch, device=device) < 0.1, NULL_LABEL, labels[idx])
        t = torch.randint(0, 1000, (batch,), device=device)
        noise = torch.randn_like(x0)
        x_t = a_all[t].view(-1, 1, 1, 1) * x0 + s_all[t].view(-1, 1, 1, 1) * noise
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model(x_t, t, (y,))
        return torch.mean((out.float() - noise) ** 2)

    def step() -> torch.Tensor:
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        update_ema(ema, model, state["step"], 0.999)
        state["step"] += 1
        return loss.detach()

    return step, lambda: loss_fn().backward(), model


def tinydiff_arm(
    device: torch.device, batch: int, overrides: dict[str, Any], smoke: bool, cuda_graphs: bool = False
) -> tuple[Callable[[], Any], Callable[[], None], torch.nn.Module]:
    from tinydiff.config import resolve_config
    from tinydiff.diffusion import training_loss
    from tinydiff.train import Trainer

    train = {"batch_size": batch, "device": device.type, **overrides}
    model_over = {"base_channels": 8, "num_res_blocks": 1, "groups": 4, "text": {"dim": 16, "layers": 1, "heads": 2}} if smoke else {}
    config = resolve_config("gpu", None, {"train": train, "model": model_over})
    trainer = Trainer(config, Path("unused-run-dir"))  # the step writes nothing
    if cuda_graphs:  # torch.compile's "reduce-overhead" mode captures the network in CUDA graphs
        trainer.net = torch.compile(trainer.model, mode="reduce-overhead")

    def forward_backward() -> None:
        n = batch
        x0 = torch.randn(n, 1, 28, 28, device=trainer.device)
        t = torch.randint(0, 1000, (n,), device=trainer.device)
        context = trainer.model.encode_text(["a handwritten seven"] * n)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            training_loss(trainer.model, x0, t, torch.randn_like(x0), trainer.schedule, context=context).backward()

    return trainer.train_step, forward_backward, trainer.model


def throughput(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    rows = []
    arms: list[tuple[str, int, Callable[[], tuple]]] = [
        ("diffusers UNet2DModel (full loop)", args.batch, lambda: diffusers_arm(device, args.batch, "small" if args.smoke else "gpu")),
        ("TinyDiff eager", args.batch, lambda: tinydiff_arm(device, args.batch, {}, args.smoke)),
        ("TinyDiff +channels_last", args.batch, lambda: tinydiff_arm(device, args.batch, {"channels_last": True}, args.smoke)),
    ]  # fmt: skip
    if not args.no_compile:
        arms.append(("TinyDiff +channels_last +compile", args.batch,
                     lambda: tinydiff_arm(device, args.batch, {"channels_last": True, "compile": True}, args.smoke)))  # fmt: skip
        arms.append(("TinyDiff +channels_last +compile (CUDA graphs)", args.batch,
                     lambda: tinydiff_arm(device, args.batch, {"channels_last": True}, args.smoke, cuda_graphs=True)))  # fmt: skip
    big = args.batch * 4
    arms.append((f"TinyDiff +channels_last, batch {big}, lr x2", big,
                 lambda: tinydiff_arm(device, big, {"channels_last": True, "lr": 2e-3 * 2}, args.smoke)))  # fmt: skip
    peak = peak_flops(device)
    for name, batch, build in arms:
        print(f"[gpu_throughput] {name} ...", file=sys.stderr)
        start = time.perf_counter()
        step, fwd_bwd, model = build()
        flops = flops_per_image(fwd_bwd, batch)
        steps_per_s, n = time_loop(step, device, args.seconds, args.warmup)
        rate = steps_per_s * batch
        check_finite(f"{name} images/s", rate)
        rows.append({"arm": name, "batch": batch, "parameters": count_parameters(model), "img_per_s": rate,
                     "gflop_per_image": flops / 1e9, "mfu": rate * flops / peak if peak else None,
                     "setup_s": time.perf_counter() - start - n / steps_per_s, "timed_steps": n})  # fmt: skip
        del step, fwd_bwd, model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    base = rows[0]["img_per_s"]
    for r in rows:
        r["ratio_to_diffusers"] = r["img_per_s"] / base
    return rows


def time_to_quality(args: argparse.Namespace) -> dict[str, Any]:
    run_dir = args.out / "gpu-preset-run"
    if run_dir.exists():
        fail(f"{run_dir} already exists; remove it or pass another --out")
    minutes = 0.05 if args.smoke else args.quality_seconds / 60
    cmd = [sys.executable, "-m", "tinydiff", "train", "--preset", "gpu", "--run-dir", str(run_dir), "--max-minutes", str(minutes)]
    if args.smoke:
        cmd += ["--steps", "3", "--batch-size", "8", "--device", "cpu", "--sample-every", "3"]
    done = subprocess.run(cmd)
    if done.returncode != 0:
        fail(f"tinydiff train exited with status {done.returncode}")
    per_digit, steps = ("2", "2") if args.smoke else ("100", "20")
    out = subprocess.run([sys.executable, "-m", "tinydiff", "eval", "--model", str(run_dir), "--num-per-digit", per_digit,
                          "--sampler", "dpm++", "--steps", steps, "--json"], capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0:
        fail(f"tinydiff eval exited with status {out.returncode}: {out.stderr.strip()[-300:]}")
    report = json.loads(out.stdout)
    return {k: report[k] for k in ("accuracy", "min_digit_accuracy", "mnist_fd", "mnist_fd_floor", "fd_ratio", "nfe") if k in report}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seconds", type=float, default=15.0, help="timed seconds per arm")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile arm")
    p.add_argument("--skip-quality", action="store_true", help="throughput only")
    p.add_argument("--quality-seconds", type=float, default=60.0, help="training budget for the time-to-quality run")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_throughput"))
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, a few steps: checks the plumbing")
    args = p.parse_args(argv)
    require_diffusers()
    if args.smoke:
        device = torch.device("cpu")
        args.batch, args.seconds, args.warmup, args.no_compile = 4, 0.2, 1, True
    elif not torch.cuda.is_available():
        fail("no CUDA GPU: this benchmark measures GPU throughput (use --smoke to check it on a CPU)")
    else:
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    rows = throughput(args, device)
    print(f"\n{'arm':44s} {'batch':>6s} {'params':>7s} {'img/s':>9s} {'x diffusers':>11s} {'GFLOP/img':>10s} {'MFU':>6s}")
    for r in rows:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        print(f"{r['arm']:44s} {r['batch']:6d} {r['parameters'] / 1e6:6.2f}M {r['img_per_s']:9.0f} "
              f"{r['ratio_to_diffusers']:11.2f} {r['gflop_per_image']:10.2f} {mfu:>6s}")  # fmt: skip
    result: dict[str, Any] = {"benchmark": "gpu_throughput", "date": time.strftime("%Y-%m-%d"), "machine": machine(),
                              "command": " ".join(sys.argv), "rows": rows}  # fmt: skip
    if not args.skip_quality:
        result["time_to_quality"] = quality = time_to_quality(args)
        print(f"\ntime to quality ({args.quality_seconds:g} s of `tinydiff train --preset gpu`): {json.dumps(quality)}")
    write_json(args.out / "results.json", result)
    print(f"results: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
