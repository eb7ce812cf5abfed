"""TinyDiff: denoising diffusion models from scratch in PyTorch.

Importing this package is cheap (no torch): the command line's ``--help`` and
``--version`` stay fast. The heavy pieces load on first use::

    from tinydiff import Pipeline
    pipe = Pipeline.from_ref()                        # the bundled model; or "runs/my-run"
    out = pipe("a handwritten seven", num_images=4)   # out.images: uint8 tensor [4, 28, 28]; out.seed
    images = pipe.sample(16, seed=0)                  # the tensor alone
"""

from __future__ import annotations

from typing import Any

from .errors import TinyDiffError
from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["Pipeline", "TinyDiffError", "__version__", "hookimpl", "train"]


def __getattr__(name: str) -> Any:
    """Load torch-backed entry points lazily (PEP 562)."""
    if name == "Pipeline":
        from .pipeline import Pipeline

        return Pipeline
    if name == "train":
        from .train import train

        return train
    raise AttributeError(f"module 'tinydiff' has no attribute {name!r}")
