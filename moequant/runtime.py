"""Where computation runs and how it is seeded: shared by every stage."""

from __future__ import annotations

import random

import numpy as np
import torch

from moequant.errors import UsageError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def default_device() -> torch.device:
    """CUDA when present, else CPU: every GPU path also runs on CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


SPREAD = "all"
"""`--device all`: the model placed over every GPU the job was given (accelerate's balanced
`device_map`, layers that do not fit offloaded to host memory, then disk); on a machine
without CUDA it is the CPU."""


def spread_map(name: str | None) -> str | None:
    """The `device_map` that `--device NAME` asks transformers for; None for a single device."""
    return "balanced" if name == SPREAD and torch.cuda.is_available() else None


def resolve_device(name: str | None) -> torch.device:
    """The device inputs go to; for `all`, the first GPU (where the embeddings are placed)."""
    if name in (None, "auto"):
        return default_device()
    if name == SPREAD:
        return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}; use 'auto', 'cpu', 'cuda[:N]' or 'all'") from None


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {name!r}; allowed: {', '.join(DTYPES)}")
    return DTYPES[name]


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
