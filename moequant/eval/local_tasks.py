"""Offline lm-eval tasks cut deterministically from held-out text (the demo's DIR/data/).

Three kinds per domain, each answerable only by a model that learned the text's
distribution: next-segment multiple choice (the true continuation against segments drawn
from elsewhere in the same file), a cloze on the last word of a segment (LAMBADA-style,
greedy exact match; for arithmetic lines "12 + 7 = 19" that word is the result), and the
same last word as multiple choice against other segments' last words. The YAML shapes live in
`task_templates/`; this module only fills in names and data files, so lm-eval reads them
like any task of its own through `--include-path`.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

import moequant
from moequant.artifacts import atomic_dir, atomic_file, file_sha256, write_json
from moequant.errors import UsageError
from moequant.eval.config import LocalTaskConfig

MANIFEST = "tasks.json"
SPLIT_FILES = {"test": "test.txt", "validation": "validation.txt"}
_LONG_LINE = 200
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LAST_WORD = re.compile(r"(-?\w+)[^\w\s]*")


@dataclass(frozen=True)
class Segment:
    """A line, or a sentence of a long line, with the separator that preceded it."""

    text: str
    separator: str


def segment(text: str) -> list[Segment]:
    """Lines keep their indentation (code); only long prose lines are cut into sentences."""
    found: list[Segment] = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line.strip():
            continue
        pieces = _SENTENCE_END.split(line) if len(line) > _LONG_LINE else [line]
        found.extend(Segment(piece, "\n" if index == 0 else " ") for index, piece in enumerate(pieces) if piece)
    return found


def _join(window: list[Segment]) -> str:
    return window[0].text + "".join(s.separator + s.text for s in window[1:])


def next_segment_docs(segments: list[Segment], config: LocalTaskConfig, rng: random.Random) -> list[dict[str, Any]]:
    distinct = sorted({s.text for s in segments})
    if len(distinct) < config.choices:
        return []
    positions = list(range(1, len(segments)))
    docs = []
    for position in sorted(rng.sample(positions, min(config.docs_per_task, len(positions)))):
        gold = segments[position]
        distractors = rng.sample([t for t in distinct if t != gold.text], config.choices - 1)
        options = [gold.text, *distractors]
        rng.shuffle(options)
        docs.append(
            {
                "context": _join(segments[max(0, position - config.context_segments) : position]),
                "choices": [gold.separator + option for option in options],
                "label": options.index(gold.text),
            }
        )
    return docs


def _last_words(segments: list[Segment]) -> list[tuple[int, str, str]]:
    """(position, the segment without its last word, that word) of every segment ending in a word."""
    found = []
    for position, seg in enumerate(segments):
        head, _, last = seg.text.rpartition(" ")
        match = _LAST_WORD.fullmatch(last)
        if match and len(head.split()) >= 2:
            found.append((position, head.rstrip(), match.group(1)))
    return found


def _word_context(segments: list[Segment], position: int, head: str, config: LocalTaskConfig) -> str:
    preceding = segments[max(0, position - config.context_segments + 1) : position]
    return _join([*preceding, Segment(head, segments[position].separator)])


def cloze_docs(segments: list[Segment], config: LocalTaskConfig, rng: random.Random) -> list[dict[str, Any]]:
    candidates = _last_words(segments)
    return [
        {"context": _word_context(segments, position, head, config), "target": " " + word}
        for position, head, word in sorted(rng.sample(candidates, min(config.docs_per_task, len(candidates))))
    ]


def word_choice_docs(segments: list[Segment], config: LocalTaskConfig, rng: random.Random) -> list[dict[str, Any]]:
    """The cloze as multiple choice: the true last word against last words of other segments.

    Scored by log-likelihood over a handful of options instead of greedy exact match, so a
    small model scores well above chance and a damaged one measurably less (for arithmetic
    lines the options are other lines' results).
    """
    candidates = _last_words(segments)
    pool = sorted({word for _, _, word in candidates})
    if len(pool) < config.choices:
        return []
    docs = []
    for position, head, word in sorted(rng.sample(candidates, min(config.docs_per_task, len(candidates)))):
        options = [word, *rng.sample([w for w in pool if w != word], config.choices - 1)]
        rng.shuffle(options)
        docs.append(
            {
                "context": _word_context(segments, position, head, config),
                "choices": [" " + option for option in options],
                "label": options.index(word),
            }
        )
    return docs


BUILDERS = {
    "next": ("next_sentence.yaml", next_segment_docs),
    "cloze": ("cloze.yaml", cloze_docs),
    "word": ("next_sentence.yaml", word_choice_docs),
}


def find_domains(data_dir: Path) -> dict[str, Path]:
    """Domain name → folder holding test.txt: each subfolder, or the folder itself."""
    if not data_dir.is_dir():
        raise UsageError(f"data directory {str(data_dir)!r} does not exist")
    if (data_dir / "data").is_dir() and not (data_dir / SPLIT_FILES["test"]).is_file():
        data_dir = data_dir / "data"
    domains = {_identifier(p.name): p for p in sorted(data_dir.iterdir()) if (p / SPLIT_FILES["test"]).is_file()}
    if not domains and (data_dir / SPLIT_FILES["test"]).is_file():
        domains = {_identifier(data_dir.name): data_dir}
    if not domains:
        raise UsageError(f"no {SPLIT_FILES['test']} under {str(data_dir)!r} (expected DIR/<domain>/test.txt)")
    return domains


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name).strip("_").lower() or "text"


def _template(name: str) -> dict[str, Any]:
    return yaml.safe_load(resources.files("moequant.eval").joinpath("task_templates", name).read_text())


def _write_jsonl(path: Path, docs: list[dict[str, Any]]) -> None:
    with atomic_file(path) as handle:
        for doc in docs:
            handle.write(json.dumps(doc, ensure_ascii=False) + "\n")


def write_local_tasks(data_dir: str | Path, out_dir: str | Path, config: LocalTaskConfig | None = None) -> dict[str, Any]:
    """Write task YAMLs, their JSONL data and a manifest to `out_dir`; returns the manifest.

    Data file paths in the YAMLs are absolute (lm-eval resolves them against its working
    directory), pointing at where `out_dir` will be once the atomic write completes.
    """
    config = config or LocalTaskConfig()
    final = Path(out_dir).expanduser().resolve()
    domains = find_domains(Path(data_dir).expanduser())
    tasks: dict[str, Any] = {}
    with atomic_dir(final) as tmp:
        for domain, folder in domains.items():
            splits = {split: folder / file for split, file in SPLIT_FILES.items() if (folder / file).is_file()}
            for kind, (template_name, build) in BUILDERS.items():
                name = f"{config.group}_{kind}_{domain}"
                data_files = {}
                counts = {}
                for split, source in splits.items():
                    rng = random.Random(f"{config.seed}:{name}:{split}")
                    docs = build(segment(source.read_text(encoding="utf-8")), config, rng)
                    if not docs:
                        continue
                    _write_jsonl(tmp / f"{name}.{split}.jsonl", docs)
                    data_files[split] = str(final / f"{name}.{split}.jsonl")
                    counts[split] = len(docs)
                if "test" not in data_files:
                    continue
                task = _template(template_name)
                task["task"] = name
                task["dataset_kwargs"]["data_files"] = data_files
                if "validation" in data_files:
                    task["fewshot_split"] = "validation"
                (tmp / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
                tasks[name] = {
                    "kind": kind,
                    "domain": domain,
                    "docs": counts,
                    "sources": {split: {"path": str(p.resolve()), "sha256": file_sha256(p)} for split, p in splits.items()},
                }
        if not tasks:
            raise UsageError(f"the held-out text under {str(data_dir)!r} is too short to build any task")
        group = _template("group.yaml")
        group["group"] = config.group
        group["task"] = list(tasks)
        (tmp / f"{config.group}.yaml").write_text(yaml.safe_dump(group, sort_keys=False))
        manifest = {
            "group": config.group,
            "tasks": tasks,
            "config": asdict(config),
            "moequant_version": moequant.__version__,
        }
        write_json(tmp / MANIFEST, manifest)
    return manifest
