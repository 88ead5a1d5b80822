"""The texts perplexity is measured on: WikiText2 test, C4 validation shard 0, local files.

Hub corpora load through `datasets` (Hub, local cache, or a local copy named by
`data_path`); an offline miss becomes one line that says which dataset was missing and how
to point at a copy, instead of a network traceback.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from moequant.errors import UsageError
from moequant.eval.config import TEXT_PREFIX, check_dataset_spec

Protocol = Literal["consecutive", "random"]


@dataclass(frozen=True)
class HubSource:
    """Where a Hub corpus lives and how the reference code (GPTQ/QuaRot) evaluates it."""

    repo: str
    config: str | None
    split: str
    data_files: dict[str, str] | None
    protocol: Protocol
    joiner: str = "\n\n"


HUB_SOURCES: dict[str, HubSource] = {
    "wikitext2": HubSource("Salesforce/wikitext", "wikitext-2-raw-v1", "test", None, "consecutive"),
    "c4": HubSource(
        "allenai/c4", None, "validation", {"validation": "en/c4-validation.00000-of-00008.json.gz"}, "random"
    ),
}


@dataclass
class EvalText:
    """Documents plus the protocol that cuts them into windows.

    A consecutive corpus is one stream (WikiText2's documents already joined by blank lines);
    a random-window corpus keeps its documents apart because windows never cross them.
    """

    name: str
    protocol: Protocol
    documents: list[str]
    origin: str

    def sha256(self) -> str:
        """Fingerprint of exactly the text evaluated, so two numbers can be told comparable."""
        digest = hashlib.sha256()
        for document in self.documents:
            encoded = document.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little"))
            digest.update(encoded)
        return digest.hexdigest()


def load_eval_text(spec: str, data_path: str | None = None) -> EvalText:
    check_dataset_spec(spec)
    if spec.startswith(TEXT_PREFIX):
        path = spec[len(TEXT_PREFIX) :]
        return EvalText(spec, "consecutive", [read_text_file(path)], str(Path(path).expanduser().resolve()))
    source = HUB_SOURCES[spec]
    rows = _load_rows(spec, source, data_path)
    texts = [str(row) for row in rows]
    if not any(text.strip() for text in texts):
        raise UsageError(f"dataset {spec!r} from {data_path or source.repo} has no text")
    documents = [source.joiner.join(texts)] if source.protocol == "consecutive" else [t for t in texts if t.strip()]
    return EvalText(spec, source.protocol, documents, data_path or source.repo)


def read_text_file(path: str) -> str:
    """A .txt file as is, or the `text` fields of a .jsonl file joined by blank lines."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"text file {path!r} does not exist")
    raw = file.read_text(encoding="utf-8")
    if file.suffix == ".jsonl":
        texts = []
        for number, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise UsageError(f"{path}:{number} is not valid JSON") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise UsageError(f"{path}:{number} has no string field 'text'")
            texts.append(row["text"])
        raw = "\n\n".join(texts)
    if not raw.strip():
        raise UsageError(f"text file {path!r} is empty")
    return raw


def _load_rows(name: str, source: HubSource, data_path: str | None) -> list[Any]:
    import datasets

    if data_path is None:
        try:
            rows = datasets.load_dataset(source.repo, source.config, split=source.split, data_files=source.data_files)
        except (OSError, datasets.exceptions.DatasetsError) as err:
            raise UsageError(
                f"dataset {name!r} ({source.repo}, split {source.split}) is not available: "
                f"{_first_line(err)}; pass --data-path (PerplexityConfig.data_path) pointing at a local copy, "
                "or fill the Hugging Face cache (HF_HOME) while online"
            ) from None
        return list(rows["text"])
    return _load_local_rows(name, source, Path(data_path).expanduser())


def _load_local_rows(name: str, source: HubSource, path: Path) -> list[Any]:
    """A local copy in whatever form people keep one: save_to_disk, a repo clone, or one file."""
    import datasets

    if not path.exists():
        raise UsageError(f"local copy of dataset {name!r} at {str(path)!r} does not exist")
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if source.split not in loaded:
                    raise UsageError(f"local copy {str(path)!r} of {name!r} has no split {source.split!r}")
                loaded = loaded[source.split]
        elif path.is_dir():
            loaded = datasets.load_dataset(str(path), source.config, split=source.split, data_files=source.data_files)
        elif path.suffix == ".txt":
            return [path.read_text(encoding="utf-8")]
        else:
            builder = "parquet" if path.suffix == ".parquet" else "json"
            loaded = datasets.load_dataset(builder, data_files=str(path), split="train")
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as err:
        if isinstance(err, UsageError):
            raise
        raise UsageError(f"cannot read local copy {str(path)!r} of dataset {name!r}: {_first_line(err)}") from None
    if "text" not in loaded.column_names:
        raise UsageError(f"local copy {str(path)!r} of dataset {name!r} has no 'text' column")
    return list(loaded["text"])


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
