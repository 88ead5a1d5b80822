"""The calibration file format shared by every source (EBSS and text windows).

`NAME.jsonl` holds one record per sample; `NAME.summary.json` beside it holds set-level
statistics and the tokenizer fingerprint. Token ids are what calibration consumes: decoded
text is kept for reading only, because re-tokenising it would not give the same ids back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from moequant.artifacts import atomic_file, write_json
from moequant.errors import UsageError


@dataclass
class CalibrationRecord:
    input_ids: list[int]
    text: str
    mean_logprob: float | None = None
    sigma: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def summary_path(jsonl_path: str | Path) -> Path:
    path = Path(jsonl_path)
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(f"{stem}.summary.json")


def tokenizer_fingerprint(tokenizer: Any) -> dict[str, Any]:
    """Identify a vocabulary so a calibration set cannot be fed to a model it was not made for."""
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode()).hexdigest()
    return {"vocab_size": len(vocab), "vocab_sha256": digest}


def write_calibration(path: str | Path, records: list[CalibrationRecord], summary: dict[str, Any]) -> None:
    """Write records, then the summary: the summary's presence marks a complete set."""
    with atomic_file(path) as handle:
        for record in records:
            row = asdict(record)
            row.update(row.pop("extra"))
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    write_json(summary_path(path), summary)


def read_calibration(path: str | Path, tokenizer: Any | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """Token ids [nsamples, seqlen] and the summary; checks the vocabulary when a tokenizer is given."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"calibration file {str(path)!r} does not exist")
    summary_file = summary_path(path)
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    rows = []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line)["input_ids"])
                except (json.JSONDecodeError, KeyError):
                    raise UsageError(f"{path}:{number}: not a calibration record (needs 'input_ids')") from None
    if not rows:
        raise UsageError(f"calibration file {str(path)!r} holds no samples")
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise UsageError(f"calibration file {str(path)!r} mixes sequence lengths {sorted(lengths)}; expected one")
    ids = torch.tensor(rows, dtype=torch.long)
    if tokenizer is not None:
        expected = tokenizer_fingerprint(tokenizer)
        recorded = summary.get("tokenizer")
        if recorded and recorded.get("vocab_sha256") != expected["vocab_sha256"]:
            raise UsageError(
                f"calibration file {str(path)!r} was made with another tokenizer "
                f"(vocab {recorded.get('vocab_size')} tokens) than the model's (vocab {expected['vocab_size']})"
            )
        if int(ids.max()) >= len(tokenizer):
            raise UsageError(
                f"calibration file {str(path)!r} holds token id {int(ids.max())} beyond the model's vocabulary ({len(tokenizer)})"
            )
    return ids, summary
