"""How each result file of a workflow run is read, found where the workflow wrote it.

`RESULTS/{model}/eval/{method}-w{bits}/ppl-{dataset}.json` holds perplexity, KL divergence
and top-1 agreement to the fp model; `.../tasks.json` the lm-eval accuracies;
`RESULTS/{model}/calib/{name}.summary.json` a calibration set's σ and expert usage. Those
paths are the workflow's own (`moequant/plan/layout.py`), used here, not restated; a
folder is searched with the same path, `*` in place of the name looked for.
Readers accept the few shapes these files have had (flat or nested under `metrics` /
`results`, lm-eval's `acc,none` keys) so old results keep rendering.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from moequant.errors import UsageError
from moequant.plan.layout import CALIB_SUMMARY, Layout, parse_variant, ppl_dataset

TASK_METRICS = ("acc", "exact_match", "pass@1", "pass_at_1", "acc_norm", "accuracy")


def read_json(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UsageError(f"result file {str(path)!r} is not JSON ({err}); delete it and rerun its stage") from None
    if not isinstance(payload, dict):
        raise UsageError(f"result file {str(path)!r} holds {type(payload).__name__}, expected a JSON object")
    return payload


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _metric_block(payload: dict[str, Any]) -> dict[str, Any]:
    for key in ("metrics", "results"):
        if isinstance(payload.get(key), dict):
            return payload[key]
    return payload


def ppl_metrics(payload: dict[str, Any]) -> dict[str, float]:
    """ppl, kld and top1_agree of one perplexity result (absent ones left out)."""
    block = _metric_block(payload)
    aliases = {"ppl": ("ppl", "perplexity"), "kld": ("kld", "kl", "kl_divergence"), "top1_agree": ("top1_agree",)}
    found = {}
    for name, keys in aliases.items():
        for key in keys:
            value = _number(block.get(key))
            if value is not None:
                found[name] = value
                break
    return found


def _task_accuracy(metrics: dict[str, Any]) -> float | None:
    """The task's headline accuracy in percent: acc, exact match or pass@1, in that order."""
    plain: dict[str, Any] = {}
    for key, value in metrics.items():
        name = str(key).split(",")[0]
        if not name.endswith("_stderr"):
            plain.setdefault(name, value)
    for key in TASK_METRICS:
        value = _number(plain.get(key))
        if value is not None:
            return value * 100.0 if value <= 1.0 else value
    return None


def task_accuracies(payload: dict[str, Any]) -> dict[str, float]:
    """Task → accuracy in percent; `eval-tasks`' own headline `summary` wins over raw lm-eval results."""
    for key in ("summary", "results", "tasks"):
        if isinstance(payload.get(key), dict):
            block = payload[key]
            break
    else:
        block = payload
    found = {}
    for task, metrics in (block or {}).items():
        if isinstance(metrics, dict):
            value = _task_accuracy(metrics)
            if value is not None:
                found[str(task)] = value
        elif _number(metrics) is not None:
            value = float(metrics)
            found[str(task)] = value * 100.0 if value <= 1.0 else value
    return found


def task_stderrs(payload: dict[str, Any]) -> dict[str, float]:
    """Task → lm-eval's standard error of its headline accuracy, in percent (tasks without one left out).

    The metric is the first of TASK_METRICS that has both a value and a stderr in lm-eval's
    raw `results`, the order `_task_accuracy` picks the headline in.
    """
    found = {}
    for task, metrics in (payload.get("results") or {}).items():
        if not isinstance(metrics, dict):
            continue
        for metric in TASK_METRICS:
            values = {str(k).split(",")[0]: v for k, v in metrics.items()}
            value, error = _number(values.get(metric)), _number(values.get(f"{metric}_stderr"))
            if value is not None and error is not None:
                found[str(task)] = error * 100.0 if value <= 1.0 else error
                break
    return found


def task_documents(payload: dict[str, Any]) -> dict[str, dict[int, float]]:
    """Task → document id → its headline score, as `eval-tasks` records them (older files have none)."""
    found = {}
    for task, entry in (payload.get("documents") or {}).items():
        if isinstance(entry, dict) and len(entry.get("doc_ids", [])) == len(entry.get("scores", [])):
            found[str(task)] = {int(i): float(v) for i, v in zip(entry["doc_ids"], entry["scores"])}
    return found


class ResultsLayout:
    """Paths and readers for one results folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UsageError(f"results folder {str(self.root)!r} does not exist")
        self.paths = Layout(str(self.root))

    @staticmethod
    def _glob(pattern: str) -> list[Path]:
        """The files matching a layout path with `*` for its last name (the folder is taken
        literally: a hand-made folder's names may hold glob characters)."""
        path = Path(pattern)
        return sorted(path.parent.glob(path.name))

    def eval_dir(self, model: str, method: str, bits: int) -> Path:
        return Path(self.paths.eval_dir(model, method, bits))

    def ppl_file(self, model: str, method: str, bits: int, dataset: str) -> Path:
        return Path(self.paths.ppl_file(model, method, bits, dataset))

    def tasks_file(self, model: str, method: str, bits: int) -> Path:
        return Path(self.paths.tasks_file(model, method, bits))

    def calib_summary(self, model: str, calibration: str) -> Path:
        return Path(self.paths.calib_summary(model, calibration))

    def models(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if Path(self.paths.evaluations_dir(p.name)).is_dir())

    def variants(self, model: str) -> list[tuple[str, int]]:
        found = []
        for path in self._glob(self.paths.eval_dir(model, "*", "*")):
            parsed = parse_variant(path.name)
            if parsed and path.is_dir():
                found.append(parsed)
        return found

    def ppl_datasets(self, model: str, method: str, bits: int) -> list[str]:
        return sorted(ppl_dataset(p.name) for p in self._glob(self.paths.ppl_file(model, method, bits, "*")))

    def task_names(self, model: str, method: str, bits: int) -> list[str]:
        path = self.tasks_file(model, method, bits)
        return sorted(task_accuracies(read_json(path))) if path.is_file() else []

    def calibration_sets(self, model: str) -> list[str]:
        return sorted(p.name[: -len(CALIB_SUMMARY)] for p in self._glob(self.paths.calib_summary(model, "*")))

    def ppl(self, model: str, method: str, bits: int, dataset: str) -> dict[str, float]:
        path = self.ppl_file(model, method, bits, dataset)
        return ppl_metrics(read_json(path)) if path.is_file() else {}

    def tasks(self, model: str, method: str, bits: int) -> dict[str, float]:
        path = self.tasks_file(model, method, bits)
        return task_accuracies(read_json(path)) if path.is_file() else {}

    def task_errors(self, model: str, method: str, bits: int) -> dict[str, float]:
        path = self.tasks_file(model, method, bits)
        return task_stderrs(read_json(path)) if path.is_file() else {}

    def task_documents(self, model: str, method: str, bits: int) -> dict[str, dict[int, float]]:
        path = self.tasks_file(model, method, bits)
        return task_documents(read_json(path)) if path.is_file() else {}

    def calibration(self, model: str, calibration: str) -> dict[str, Any]:
        path = self.calib_summary(model, calibration)
        return read_json(path) if path.is_file() else {}
