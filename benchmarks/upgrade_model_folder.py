"""Rewrite a model folder in today's format, weights unchanged (bit for bit, in their saved dtype).

    python benchmarks/upgrade_model_folder.py src/tinydiff/models/tinydiff-mnist

Format 1 folders stored the UNet as unnamed lists (``down.1.0.conv1.weight``) and the schedule's
T as ``num_steps``; format 2 names the parts (``downs.0.blocks.1.res.conv1.weight``) and says
``num_timesteps``. TinyDiff reads both; this rewrites an old folder so it reads like a new one
(it was run once on the bundled model). Prints the renamed keys' count.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folder", type=Path)
    args = p.parse_args(argv)

    from tinydiff.checkpoint import FORMAT, WEIGHTS_FILE, read_model_config, read_safetensors, read_tokenizer, save_model_folder
    from tinydiff.nn.unet import upgrade_state_dict

    config = read_model_config(args.folder)
    if config.format == FORMAT:
        print(f"{args.folder} is already format {FORMAT}")
        return 0
    tensors = read_safetensors(args.folder / WEIGHTS_FILE)  # saved dtypes kept (the bundled model is fp16)
    renamed = upgrade_state_dict(tensors, config.model)
    tokenizer = read_tokenizer(args.folder) if config.model.text is not None else None
    save_model_folder(args.folder, config, renamed, tokenizer)
    print(f"{args.folder}: format {config.format} -> {FORMAT}, {sum(a != b for a, b in zip(sorted(tensors), sorted(renamed)))} keys renamed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
