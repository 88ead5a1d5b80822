"""The transformers config of what a user names as `--model`: a Hugging Face id or a model directory.

Read before any weights, so a missing path, an id not in the offline cache or an unknown
family becomes one `UsageError` line instead of a traceback from transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moequant.errors import UsageError


def _looks_like_path(spec: str) -> bool:
    """Hugging Face ids are `name` or `org/name`; anything else is meant as a local path."""
    return Path(spec).expanduser().exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1


def load_config(spec: str, trust_remote_code: bool = False):
    from transformers import AutoConfig

    path = Path(spec).expanduser()
    if _looks_like_path(spec) and not path.is_dir():
        raise UsageError(f"model directory {spec!r} does not exist")
    try:
        return AutoConfig.from_pretrained(str(path) if path.is_dir() else spec, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"cannot load model {spec!r}: not a model directory and not in the local Hugging Face cache ({first})"
        ) from None


def check_seqlen(model_config: Any, seqlen: int) -> None:
    """Windows longer than the model's positions would be scored on positions it never saw."""
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit is not None and seqlen > limit:
        raise UsageError(f"seqlen {seqlen} exceeds the model's maximum positions ({limit})")
