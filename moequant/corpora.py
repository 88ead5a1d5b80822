"""Where text comes from: the Hub corpora calibration and evaluation read, and local text files.

Calibration draws from a corpus's train split and evaluation measures on its held-out split,
so one registry keyed by (name, purpose) keeps both on the same canonical dataset ids. A Hub
corpus loads from the Hub, the local `datasets` cache, or a local copy named by `data_path`;
when none works offline the user gets one line naming the dataset and how to point at a copy,
instead of a network traceback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from moequant.errors import UsageError, require

Purpose = Literal["calibration", "evaluation"]

DATA_PATH_OPTION = "--data-path"


@dataclass(frozen=True)
class HubDataset:
    """One text field of one split of a Hub dataset; `data_file` narrows it to one shard (C4)."""

    repo: str
    config: str | None
    split: str
    field: str = "text"
    data_file: str | None = None

    @property
    def data_files(self) -> dict[str, str] | None:
        return None if self.data_file is None else {self.split: self.data_file}

    @property
    def label(self) -> str:
        parts = [self.repo, self.config or "", self.data_file or "", f"{self.split} split"]
        return ", ".join(part for part in parts if part)


HUB_DATASETS: dict[tuple[str, Purpose], HubDataset] = {
    ("wikitext2", "calibration"): HubDataset("Salesforce/wikitext", "wikitext-2-raw-v1", "train"),
    ("c4", "calibration"): HubDataset("allenai/c4", None, "train", data_file="en/c4-train.00000-of-01024.json.gz"),
    ("humaneval", "calibration"): HubDataset("openai_humaneval", None, "test", field="prompt"),
    ("gsm8k", "calibration"): HubDataset("gsm8k", "main", "train", field="question"),
    ("wikitext2", "evaluation"): HubDataset("Salesforce/wikitext", "wikitext-2-raw-v1", "test"),
    ("c4", "evaluation"): HubDataset(
        "allenai/c4", None, "validation", data_file="en/c4-validation.00000-of-00008.json.gz"
    ),
}

TEXT_PREFIX = "text:"
"""`text:PATH` names a local text file wherever a Hub dataset could be named."""


def hub_names(purpose: Purpose) -> tuple[str, ...]:
    """The Hub datasets known for `purpose`, in the order error messages list them."""
    return tuple(name for name, use in HUB_DATASETS if use == purpose)


TEXT_SUFFIXES = (".txt", ".raw")
"""Local files read whole as one document (WikiText's raw dumps are `.raw`)."""


def read_text_file(path: str | Path) -> list[str]:
    """Documents of a local file: a .jsonl/.json file's `text` fields, or any other file as one document."""
    file = Path(path).expanduser()
    require(file.is_file(), f"text file {str(path)!r} does not exist")
    if file.suffix in (".jsonl", ".json"):
        documents = [_text_field(file, number, line) for number, line in _numbered_lines(file) if line.strip()]
    else:
        documents = [file.read_text(encoding="utf-8", errors="replace")]
    require(any(doc.strip() for doc in documents), f"text file {str(path)!r} is empty or holds no text")
    return documents


def _numbered_lines(file: Path) -> list[tuple[int, str]]:
    with open(file, encoding="utf-8", errors="replace") as handle:
        return list(enumerate(handle, start=1))


def _text_field(file: Path, number: int, line: str) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        raise UsageError(f'{file}:{number} is not valid JSON: not a JSON line like {{"text": "..."}}') from None
    require(
        isinstance(row, dict) and isinstance(row.get("text"), str),
        f"{file}:{number} has no string field 'text' (expected an object with a string 'text' field)",
    )
    return row["text"]


def load_hub_documents(
    name: str, purpose: Purpose, data_path: str | None = None, option: str = DATA_PATH_OPTION
) -> list[str]:
    """Every string in the dataset's text field, blank ones included (joiners depend on them).

    `option` is how the caller's user names `data_path`, so the offline message can say it.
    """
    dataset = HUB_DATASETS[name, purpose]
    if data_path is None:
        rows, origin = _load_from_hub(name, dataset, option), dataset.repo
    else:
        rows, origin = _load_local_copy(name, dataset, Path(data_path).expanduser()), repr(data_path)
    require(
        dataset.field in rows.column_names,
        f"dataset {name!r} from {origin} has no {dataset.field!r} column (columns: {', '.join(rows.column_names)})",
    )
    documents = [doc for doc in rows[dataset.field] if isinstance(doc, str)]
    require(
        any(doc.strip() for doc in documents),
        f"dataset {name!r} from {origin} holds no text in its {dataset.field!r} column",
    )
    return documents


def _load_from_hub(name: str, dataset: HubDataset, option: str) -> Any:
    import datasets

    try:
        return datasets.load_dataset(dataset.repo, dataset.config, split=dataset.split, data_files=dataset.data_files)
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as err:
        raise UsageError(
            f"cannot load dataset {name!r}: {name} ({dataset.label}) is not reachable and not in the local "
            f"datasets cache ({_first_line(err)}); pass {option} pointing at a local copy (a save_to_disk "
            f"directory, a clone of the dataset repository, or a .jsonl/.parquet/.txt file with a "
            f"{dataset.field!r} field), or fill the Hugging Face cache (HF_HOME) while online"
        ) from None


def _load_local_copy(name: str, dataset: HubDataset, path: Path) -> Any:
    """A local copy in whatever form people keep one: save_to_disk, a repo clone, or one file."""
    import datasets

    require(path.exists(), f"local copy of dataset {name!r} at {str(path)!r} does not exist")
    try:
        if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                require(dataset.split in loaded, f"local copy {str(path)!r} of {name!r} has no split {dataset.split!r}")
                loaded = loaded[dataset.split]
            return loaded
        if path.is_dir():
            return datasets.load_dataset(str(path), dataset.config, split=dataset.split, data_files=dataset.data_files)
        if path.suffix in TEXT_SUFFIXES:
            return datasets.Dataset.from_dict({dataset.field: read_text_file(path)})
        builder = {".parquet": "parquet", ".csv": "csv"}.get(path.suffix, "json")
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except UsageError:
        raise
    except (OSError, ValueError, datasets.exceptions.DatasetsError) as err:
        raise UsageError(f"cannot read local copy {str(path)!r} of dataset {name!r}: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:200] if text else type(err).__name__
