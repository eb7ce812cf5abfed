"""Train the digit classifier behind tinydiff.evaluate and write its weights with safetensors.

    TINYDIFF_DATA_DIR=/path/to/mnist python benchmarks/train_classifier.py          # a few minutes on 2 CPU cores
    python benchmarks/train_classifier.py --smoke --out /tmp/classifier.safetensors  # seconds, no accuracy bar

Trains ``DigitClassifier`` on the MNIST training set (AdamW, cosine learning rate,
random shifts of up to ``--shift`` pixels), measures accuracy on the 10,000 test
images, and replaces ``--out`` atomically only if that accuracy is at least
``--min-accuracy``; otherwise it exits 1 and leaves the old file alone.
Results go to stdout, progress to stderr.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from tinydiff.data import load_mnist, to_model_range
from tinydiff.errors import TinyDiffError
from tinydiff.evaluate import DigitClassifier

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "tinydiff" / "weights" / "classifier.safetensors"


def random_shift(x: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image [B, 1, 28, 28] by its own random offset in [-shift, shift] px, filling with background (-1)."""
    if shift == 0:
        return x
    b, _, h, w = x.shape
    padded = nn.functional.pad(x, (shift,) * 4, value=-1.0)
    dy, dx = torch.randint(0, 2 * shift + 1, (2, b, 1), generator=generator)
    rows = (dy + torch.arange(h))[:, :, None]  # [B, H, 1]
    cols = (dx + torch.arange(w))[:, None, :]  # [B, 1, W]
    return padded[torch.arange(b)[:, None, None], 0, rows, cols].unsqueeze(1)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    hits = 0
    for xb, yb in zip(images.split(1000), labels.split(1000)):
        hits += int((model(to_model_range(xb)).argmax(1) == yb).sum())
    return hits / len(labels)


def train(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)  # initialisation and dropout
    generator = torch.Generator().manual_seed(args.seed)  # shuffling and shifts
    train_images, train_labels = load_mnist(args.data_dir, split="train")
    test_images, test_labels = load_mnist(args.data_dir, split="test")
    if args.limit:
        train_images, train_labels = train_images[: args.limit], train_labels[: args.limit]
    if args.smoke:
        test_images, test_labels = test_images[:1000], test_labels[:1000]

    model = DigitClassifier()
    steps_per_epoch = len(train_images) // args.batch_size
    total = steps_per_epoch * args.epochs
    if total == 0:
        raise TinyDiffError(f"{len(train_images)} training images make no batch of {args.batch_size}; raise --limit")
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = min(100, total // 10)

    def lr_factor(step: int) -> float:  # linear warm-up, then cosine decay to 0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_images), generator=generator)
        running = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * args.batch_size : (i + 1) * args.batch_size]
            x = random_shift(to_model_range(train_images[idx]), args.shift, generator)
            loss = nn.functional.cross_entropy(model(x), train_labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            running += loss.item()
        test_acc = accuracy(model, test_images, test_labels)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {running / steps_per_epoch:.4f}, test accuracy {test_acc:.4f}, "
              f"{time.perf_counter() - start:.0f} s", file=sys.stderr)  # fmt: skip
    elapsed = time.perf_counter() - start

    test_acc = accuracy(model, test_images, test_labels)
    params = sum(p.numel() for p in model.parameters())
    print(f"trained {params} parameters on {len(train_images)} images, {args.epochs} epochs ({total} steps), {elapsed:.1f} s")
    print(f"test accuracy {test_acc:.4f} on {len(test_labels)} images")
    if not args.smoke and test_acc < args.min_accuracy:
        print(f"error: test accuracy {test_acc:.4f} is below {args.min_accuracy}; {args.out} not written", file=sys.stderr)
        return 1

    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    data = save(tensors, metadata={"format": "pt"})  # one key: several would be written in arbitrary order
    from tinydiff.files import write_atomic

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out, data)
    print(f"wrote {args.out} ({len(data)} bytes)")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="folder holding MNIST/raw (default: TINYDIFF_DATA_DIR)")
    parser.add_argument("--out", type=Path, default=None, help="weights file (default: the package's; a temp path with --smoke)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="train on the first N training images only")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--shift", type=int, default=2, help="random translation, in pixels (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-accuracy", type=float, default=0.99, help="write the weights only at this test accuracy")
    parser.add_argument("--smoke", action="store_true", help="a few dozen steps on 1,024 images; no accuracy bar")
    args = parser.parse_args()
    if args.smoke:
        args.limit = args.limit or 1024
        args.epochs, args.batch_size = 1, 32
        args.out = args.out or Path(tempfile.mkdtemp(prefix="tinydiff-classifier-")) / "classifier.safetensors"
    args.out = args.out or DEFAULT_OUT
    try:
        sys.exit(train(args))
    except TinyDiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
