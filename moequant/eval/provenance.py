"""What an evaluation JSON records about its inputs, so a cached number can be trusted or redone."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

import moequant
from moequant.artifacts import file_sha256
from moequant.memory import peaks
from moequant.quant.checkpoint import QUANTIZED_MARKER, is_quantized_checkpoint

_IDENTIFYING_FILES = (QUANTIZED_MARKER, "config.json", "rotation.json")


def model_provenance(spec: str) -> dict[str, Any]:
    """The model as named, plus hashes of the small files that identify a local directory."""
    info: dict[str, Any] = {"spec": spec, "quantized_checkpoint": is_quantized_checkpoint(spec)}
    path = Path(spec).expanduser()
    if path.is_dir():
        info["path"] = str(path.resolve())
        info["sha256"] = {name: file_sha256(path / name) for name in _IDENTIFYING_FILES if (path / name).is_file()}
    return info


def run_metadata(device: torch.device, dtype: torch.dtype, seconds: float) -> dict[str, Any]:
    return {
        "moequant_version": moequant.__version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "seconds": round(seconds, 3),
        "memory": peaks(device),
    }
