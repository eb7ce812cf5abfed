"""Quantiles of the style measurements over MNIST, to re-derive the thresholds in tinydiff.captions.

    TINYDIFF_DATA_DIR=/path/to/mnist python benchmarks/style_thresholds.py [--split train]

Prints the quantiles of thickness, slant, |slant| and extent = max(height, width), where
each threshold falls in its distribution, and how often each style word is then used.
"""

from __future__ import annotations

import argparse
import time

import torch

from tinydiff import captions
from tinydiff.data import load_mnist

QUANTILES = (0.001, 0.01, 0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.7, 0.75, 0.8, 0.9, 0.95, 0.99, 0.999)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["train", "test"], default="train")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    images, labels = load_mnist(args.data_dir, split=args.split)

    start = time.perf_counter()
    style = captions.measure_style(images)
    elapsed = time.perf_counter() - start
    print(f"measured {len(images)} {args.split} images in {elapsed:.2f} s\n")

    extent = captions.size_extent(style)
    values = {"thickness": style["thickness"], "slant": style["slant"], "|slant|": style["slant"].abs(),
              "height": style["height"], "extent": extent}  # fmt: skip
    qs = torch.tensor(QUANTILES, dtype=torch.float64)
    print(f"{'quantile':>10} " + " ".join(f"{q:>7}" for q in QUANTILES))
    for name, v in values.items():
        print(f"{name:>10} " + " ".join(f"{x:7.3f}" for x in torch.quantile(v.double(), qs).tolist()))

    print("\nwhere each threshold falls (fraction of images at or below it):")
    for name, value, threshold in [
        ("THIN_MAX_THICKNESS", values["thickness"], captions.THIN_MAX_THICKNESS),
        ("BOLD_MIN_THICKNESS", values["thickness"], captions.BOLD_MIN_THICKNESS),
        ("UPRIGHT_MAX_SLANT (|slant|)", values["|slant|"], captions.UPRIGHT_MAX_SLANT),
        ("-LEANING_MIN_SLANT", values["slant"], -captions.LEANING_MIN_SLANT),
        ("+LEANING_MIN_SLANT", values["slant"], captions.LEANING_MIN_SLANT),
        ("SMALL_MAX_EXTENT", extent, captions.SMALL_MAX_EXTENT),
        ("LARGE_MIN_EXTENT", extent, captions.LARGE_MIN_EXTENT),
    ]:
        print(f"  {name:<28} {threshold:>6}  q{(value <= threshold).double().mean().item():.4f}")

    codes = captions.classify_style(style)
    print("\nhow often each style word is true (all digits, then per digit 0-9):")
    for column, (attribute, table) in enumerate(zip(captions.STYLE_ATTRIBUTES, captions.STYLE_WORD_TABLES)):
        for code, word in enumerate(table):
            hit = codes[:, column] == code
            per_digit = " ".join(f"{hit[labels == d].double().mean().item():5.1%}" for d in range(10))
            print(f"  {attribute:<9} {str(word or '(none)'):<14} {hit.double().mean().item():7.2%}   {per_digit}")


if __name__ == "__main__":
    main()
