"""Where text-window calibration text comes from: the Hugging Face Hub datasets or local files.

Each hub source is one canonical dataset, split and text field (SPEC §3). Offline, a source
loads from the local `datasets` cache or from `data_path`; when neither works the user gets
one line naming the dataset and the option that points at a local copy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moequant.errors import UsageError, require


@dataclass(frozen=True)
class HubCorpus:
    path: str
    name: str | None
    split: str
    field: str
    data_files: str | None = None

    @property
    def label(self) -> str:
        parts = [self.path, self.name or "", self.data_files or "", f"{self.split} split"]
        return ", ".join(part for part in parts if part)


HUB_CORPORA: dict[str, HubCorpus] = {
    "wikitext2": HubCorpus("wikitext", "wikitext-2-raw-v1", "train", "text"),
    "c4": HubCorpus("allenai/c4", None, "train", "text", data_files="en/c4-train.00000-of-01024.json.gz"),
    "humaneval": HubCorpus("openai_humaneval", None, "test", "prompt"),
    "gsm8k": HubCorpus("gsm8k", "main", "train", "question"),
}

DATA_PATH_OPTION = "--data-path"


def read_text_file(path: str | Path) -> list[str]:
    """Documents of a local file: a .jsonl/.json file's `text` fields, or any other file as one document."""
    path = Path(path).expanduser()
    require(path.is_file(), f"text file {str(path)!r} does not exist")
    if path.suffix in (".jsonl", ".json"):
        documents = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise UsageError(f"{path}:{number}: not a JSON line") from None
                require(
                    isinstance(row, dict) and isinstance(row.get("text"), str),
                    f"{path}:{number}: expected an object with a string 'text' field",
                )
                documents.append(row["text"])
    else:
        documents = [path.read_text(encoding="utf-8", errors="replace")]
    require(any(doc.strip() for doc in documents), f"text file {str(path)!r} holds no text")
    return documents


def _load_local(corpus: HubCorpus, path: Path) -> Any:
    import datasets

    if path.is_file():
        if path.suffix in (".txt", ".raw"):
            return datasets.Dataset.from_dict({corpus.field: read_text_file(path)})
        builder = {".parquet": "parquet", ".csv": "csv"}.get(path.suffix, "json")
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        saved = datasets.load_from_disk(str(path))
        return saved[corpus.split] if isinstance(saved, datasets.DatasetDict) else saved
    return datasets.load_dataset(str(path), corpus.name, data_files=corpus.data_files, split=corpus.split)


def load_hub_documents(source: str, data_path: str | None = None) -> list[str]:
    """The documents of a hub source, from `data_path` when given, else the Hub or its cache."""
    corpus = HUB_CORPORA[source]
    try:
        if data_path is not None:
            local = Path(data_path).expanduser()
            require(local.exists(), f"data path {data_path!r} for {source} does not exist")
            dataset = _load_local(corpus, local)
        else:
            import datasets

            dataset = datasets.load_dataset(
                corpus.path, corpus.name, data_files=corpus.data_files, split=corpus.split
            )
    except UsageError:
        raise
    except Exception as err:
        where = f"from {data_path!r}" if data_path else "(not reachable offline and not in the local datasets cache)"
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise UsageError(
            f"cannot load dataset {source} ({corpus.label}) {where}: {first}; "
            f"pass {DATA_PATH_OPTION} with a local copy (a dataset directory, a save_to_disk directory, "
            f"or a .jsonl/.parquet/.txt file with a {corpus.field!r} field)"
        ) from None
    require(
        corpus.field in dataset.column_names,
        f"dataset {source} has no {corpus.field!r} column (columns: {', '.join(dataset.column_names)})",
    )
    documents = [doc for doc in dataset[corpus.field] if isinstance(doc, str)]
    require(any(doc.strip() for doc in documents), f"dataset {source} holds no text in its {corpus.field!r} column")
    return documents
