"""Evaluation settings, validated once so a bad value fails before any model is loaded."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from moequant.corpora import TEXT_PREFIX, hub_names
from moequant.errors import UsageError
from moequant.runtime import resolve_dtype

PPL_DATASETS = hub_names("evaluation")


def check_dataset_spec(spec: str) -> None:
    if spec in PPL_DATASETS:
        return
    if spec.startswith(TEXT_PREFIX) and spec[len(TEXT_PREFIX) :]:
        return
    raise UsageError(f"unknown dataset {spec!r}; allowed: {', '.join(PPL_DATASETS)}, text:PATH")


def eval_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is float16 on CUDA, as the reference code evaluates, and float32 on CPU where half is slow."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return resolve_dtype(name)


@dataclass
class PerplexityConfig:
    """One perplexity measurement (method §8): which text, which windows, how many at once.

    `random_windows` and `seed` only matter for corpora evaluated by random windows (C4);
    `data_path` points at a local copy of a Hub dataset for offline runs.
    """

    dataset: str
    seqlen: int = 2048
    batch_size: int = 1
    max_windows: int | None = None
    random_windows: int = 256
    seed: int = 0
    data_path: str | None = None

    def __post_init__(self) -> None:
        check_dataset_spec(self.dataset)
        if self.seqlen < 2:
            raise UsageError(f"seqlen must be at least 2 (one token predicts the next), got {self.seqlen}")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.max_windows is not None and self.max_windows < 1:
            raise UsageError(f"max_windows must be at least 1 when given, got {self.max_windows}")
        if self.random_windows < 1:
            raise UsageError(f"random_windows must be at least 1, got {self.random_windows}")
        if self.data_path is not None and self.dataset not in PPL_DATASETS:
            raise UsageError(f"data_path replaces a Hub dataset ({', '.join(PPL_DATASETS)}); {self.dataset!r} is already local")


@dataclass
class TaskConfig:
    """One lm-eval run: task names (or a preset) and how to run them.

    `num_fewshot=None` keeps each task's own default; presets fix their shots themselves.
    """

    tasks: list[str]
    include_path: str | None = None
    num_fewshot: int | None = None
    limit: float | None = None
    batch_size: int = 1
    allow_code_execution: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.tasks or any(not name.strip() for name in self.tasks):
            raise UsageError(f"tasks must be a comma-separated list of task names, got {','.join(self.tasks)!r}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise UsageError(f"num_fewshot must be 0 or more, got {self.num_fewshot}")
        if self.limit is not None and self.limit <= 0:
            raise UsageError(f"limit must be positive (a count, or a fraction below 1), got {self.limit}")
        if self.limit is not None and self.limit >= 1 and self.limit != int(self.limit):
            raise UsageError(f"limit above 1 is a document count and must be whole, got {self.limit}")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {self.batch_size}")


@dataclass
class LocalTaskConfig:
    """How offline tasks are cut from held-out text (see moequant.eval.local_tasks)."""

    group: str = "demo"
    docs_per_task: int = 200
    choices: int = 4
    context_segments: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", self.group):
            raise UsageError(f"group must be an identifier (letters, digits, _), got {self.group!r}")
        if self.docs_per_task < 1:
            raise UsageError(f"docs_per_task must be at least 1, got {self.docs_per_task}")
        if self.choices < 2:
            raise UsageError(f"choices must be at least 2, got {self.choices}")
        if self.context_segments < 1:
            raise UsageError(f"context_segments must be at least 1, got {self.context_segments}")
