"""The rotated model on disk: an ordinary transformers directory plus rotation.json.

The directory loads with the usual `from_pretrained`; rotation.json says how it was made
(seed, Hadamard construction, transform, source and its file hashes) and whether the
runtime half of an online Hadamard must be re-installed after loading.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from moequant.artifacts import atomic_dir, file_sha256, write_json
from moequant.models import adapt
from moequant.rotation.online import OnlineHadamard, install_online_hadamard

METADATA_FILE = "rotation.json"
_HASHED_SUFFIXES = (".json", ".safetensors", ".bin", ".model", ".txt")


def source_hashes(spec: str) -> dict[str, str]:
    """sha256 of the source directory's config, tokenizer and weight files (empty for hub ids)."""
    root = Path(spec).expanduser()
    if not root.is_dir():
        return {}
    files = [path for path in sorted(root.iterdir()) if path.is_file() and path.suffix in _HASHED_SUFFIXES]
    return {path.name: file_sha256(path) for path in files}


def save_rotated(
    model: nn.Module, out_dir: str | Path, metadata: dict[str, object], tokenizer: object | None = None
) -> Path:
    """Write model, tokenizer and rotation.json atomically; returns the final directory."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        write_json(tmp / METADATA_FILE, metadata)
    return Path(out_dir)


def read_metadata(model_dir: str | Path) -> dict[str, object] | None:
    path = Path(model_dir).expanduser() / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def restore_online_hadamard(model: nn.Module, model_dir: str | Path, backend: str = "auto") -> OnlineHadamard | None:
    """Re-install the runtime Hadamard a rotated directory needs; None when it needs none."""
    metadata = read_metadata(model_dir)
    if not metadata or not metadata.get("online_hadamard"):
        return None
    return install_online_hadamard(adapt(model), backend)
