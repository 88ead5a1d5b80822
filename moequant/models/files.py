"""Weight files of a model directory checked before anything reads them.

A missing shard, a file cut short by a full disk or an interrupted copy, or a file that is
not safetensors at all would otherwise surface as a traceback from deep inside safetensors
or transformers. The checks read only each file's header and size, never the tensors.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from moequant.errors import UsageError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_MAX_HEADER = 100 * 1024 * 1024
"""safetensors refuses headers above 100 MB; a larger length means the file is not safetensors."""


def check_safetensors(path: Path) -> set[str]:
    """The tensor names of `path`; one `UsageError` line when it is missing, truncated or not safetensors."""
    if not path.is_file():
        raise UsageError(f"weight file {str(path)!r} is missing")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise UsageError(f"weight file {str(path)!r} is truncated ({size} bytes, shorter than a safetensors header)")
        (length,) = struct.unpack("<Q", prefix)
        if length > _MAX_HEADER or 8 + length > size:
            raise UsageError(f"weight file {str(path)!r} is not a complete safetensors file (header of {length} bytes, file {size})")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UsageError(f"weight file {str(path)!r} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise UsageError(f"weight file {str(path)!r} is not a safetensors file (its header is not a table of tensors)")
    try:
        ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
    except (KeyError, TypeError, IndexError, ValueError):
        raise UsageError(f"weight file {str(path)!r} is not a safetensors file (its header lacks tensor offsets)") from None
    needed = 8 + length + max(ends, default=0)
    if size < needed:
        raise UsageError(f"weight file {str(path)!r} is truncated: {size} bytes, its header needs {needed}")
    return set(header) - {"__metadata__"}


def read_weight_map(directory: Path) -> dict[str, str]:
    """Tensor name → shard file of a sharded directory, every shard checked and holding what the index lists."""
    index = directory / INDEX_FILE
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"index {str(index)!r} is not a safetensors index ({type(err).__name__}: {err})") from None
    for shard in sorted(set(weight_map.values())):
        present = check_safetensors(directory / shard)
        missing = sorted(name for name, where in weight_map.items() if where == shard and name not in present)
        if missing:
            raise UsageError(f"weight file {str(directory / shard)!r} lacks {missing[0]!r}, which the index lists")
    return weight_map


def check_model_files(directory: Path) -> None:
    """Check every safetensors weight file of a local model directory (other formats are left to transformers)."""
    if (directory / INDEX_FILE).is_file():
        read_weight_map(directory)
    elif (directory / SINGLE_FILE).exists():
        check_safetensors(directory / SINGLE_FILE)
    elif not (any(directory.glob("*.bin")) or any(directory.glob("*.pt"))):
        raise UsageError(f"model directory {str(directory)!r} has no weights ({SINGLE_FILE} or {INDEX_FILE})")
