"""lm-eval 0.4 on the in-memory model: tasks by name, local task folders, the paper's preset.

The model is handed to lm-eval's HF class as an object, so a dequantized checkpoint is
evaluated exactly as loaded (no second load from disk, no lm-eval-side quantization).
Tasks and their datasets are prepared before the model is loaded: an unknown name, an
unreachable dataset or a missing code-execution consent fails in seconds, not after
reading tens of gigabytes of weights.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from typing import Any

from torch import nn

from moequant.errors import UsageError
from moequant.eval.config import TaskConfig
from moequant.progress import say


@dataclass(frozen=True)
class TaskRequest:
    """A task (or group) to run, its shots (None: the task's default), and its headline metric."""

    name: str
    num_fewshot: int | None
    metric: str | None = None


# method §8. GSM8K's headline is lm-eval's strict "#### answer" match; flexible-extract stays in the JSON.
PAPER7 = (
    TaskRequest("mmlu", 5, "acc,none"),
    TaskRequest("humaneval", 0, "pass@1,create_test"),
    TaskRequest("gsm8k", 5, "exact_match,strict-match"),
    TaskRequest("boolq", 0, "acc,none"),
    TaskRequest("hellaswag", 0, "acc,none"),
    TaskRequest("openbookqa", 0, "acc,none"),
    TaskRequest("mathqa", 0, "acc,none"),
)
PRESETS = {"paper7": PAPER7}
DEMO_GROUP = "demo"


def resolve_requests(config: TaskConfig) -> list[TaskRequest]:
    names = [name.strip() for name in config.tasks]
    for preset, requests in PRESETS.items():
        if preset in names:
            if len(names) > 1:
                raise UsageError(f"preset {preset!r} runs alone; got tasks {','.join(names)!r}")
            if config.num_fewshot is not None:
                raise UsageError(f"preset {preset!r} fixes the shots of each task; drop --num-fewshot")
            return list(requests)
    if DEMO_GROUP in names and config.include_path is None:
        raise UsageError(
            f"the {DEMO_GROUP!r} tasks are local: pass --include-path TASKDIR (written by `moequant make-tasks`)"
        )
    return [TaskRequest(name, config.num_fewshot, "acc,none" if name == DEMO_GROUP else None) for name in names]


def task_manager(requests: list[TaskRequest], include_path: str | None):
    """An index of the local folder alone when it has every requested name (lm-eval's full index takes ~30 s)."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        if not os.path.isdir(include_path):
            raise UsageError(f"include path {include_path!r} is not a directory")
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(request.name in local.all_tasks for request in requests):
            return local
    manager = TaskManager(include_path=include_path)
    unknown = [request.name for request in requests if request.name not in manager.all_tasks]
    if unknown:
        hints = {name: difflib.get_close_matches(name, manager.all_tasks, n=3) for name in unknown}
        described = "; ".join(f"{name!r}" + (f" (did you mean {', '.join(h)}?)" if h else "") for name, h in hints.items())
        raise UsageError(f"unknown lm-eval task {described}; give local task folders with --include-path")
    return manager


@dataclass
class PreparedTasks:
    """Tasks built with their datasets loaded, grouped for one lm-eval run per shot count."""

    manager: Any
    requests: list[TaskRequest]
    built: dict[str, list[Any]]


def prepare_tasks(config: TaskConfig) -> PreparedTasks:
    import datasets

    requests = resolve_requests(config)
    manager = task_manager(requests, config.include_path)
    built: dict[str, list[Any]] = {}
    for request in requests:
        try:
            loaded = manager.load([request.name])
        except (OSError, datasets.exceptions.DatasetsError) as err:
            raise UsageError(_dataset_message(request.name, err)) from None
        groups, tasks = loaded["groups"], loaded["tasks"]
        top = groups[request.name] if request.name in groups else tasks.get(request.name)
        built[request.name] = [top] if top is not None else list(tasks.values())
        unsafe = [name for name, task in tasks.items() if _runs_code(task)]
        if unsafe and not config.allow_code_execution:
            raise UsageError(
                f"task {', '.join(unsafe)} executes model-generated code; pass --allow-code-execution to run it"
            )
    return PreparedTasks(manager, requests, built)


def _runs_code(task: Any) -> bool:
    return bool(getattr(task, "UNSAFE_CODE", False) or getattr(task.config, "unsafe_code", False))


def _dataset_message(task: str, err: BaseException) -> str:
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        f"dataset of task {task!r} is not available ({detail}); fill the Hugging Face datasets cache "
        "(HF_HOME / HF_DATASETS_CACHE) with it while online, or pass --include-path with a task YAML whose "
        "dataset_path / dataset_kwargs.data_files point at a local copy"
    )


def run_tasks(model: nn.Module, tokenizer: Any, prepared: PreparedTasks, config: TaskConfig) -> dict[str, Any]:
    """One `simple_evaluate` per shot count on the same model; results merged, headline metrics and AVG added."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    if config.allow_code_execution:
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=config.batch_size)
    limit = int(config.limit) if config.limit is not None and config.limit >= 1 else config.limit
    merged: dict[str, Any] = {"runs": []}
    shots = list(dict.fromkeys(request.num_fewshot for request in prepared.requests))
    for num_fewshot in shots:
        names = [request.name for request in prepared.requests if request.num_fewshot == num_fewshot]
        objects = [obj for name in names for obj in prepared.built[name]]
        say("lm-eval", f"{', '.join(names)} ({num_fewshot}-shot): running")
        output = simple_evaluate(
            model=lm,
            tasks=objects,
            num_fewshot=num_fewshot,
            limit=limit,
            log_samples=True,
            task_manager=prepared.manager,
            confirm_run_unsafe_code=config.allow_code_execution,
            random_seed=config.seed,
            numpy_random_seed=config.seed,
            torch_random_seed=config.seed,
            fewshot_random_seed=config.seed,
        )
        samples = output.pop("samples", None) or {}
        for key, value in output.items():
            if isinstance(value, dict) and key != "config":
                merged.setdefault(key, {}).update(value)
        merged["runs"].append({"tasks": names, "num_fewshot": num_fewshot, "config": output.get("config")})
        merged.setdefault("documents", {}).update(document_scores(samples, headline_keys(output.get("results", {}), prepared.requests)))
    merged["summary"] = headline_metrics(merged.get("results", {}), prepared.requests)
    for index, (name, score) in enumerate(merged["summary"].items(), start=1):
        say("lm-eval", f"task {index}/{len(merged['summary'])} {name}: {score:.4f}")
    requested = [merged["summary"][request.name] for request in prepared.requests if request.name in merged["summary"]]
    merged["avg"] = sum(requested) / len(requested) if len(requested) == len(prepared.requests) else None
    return merged


def headline_keys(results: dict[str, dict[str, Any]], requests: list[TaskRequest]) -> dict[str, str]:
    """Task → the "metric,filter" key of its one number: the request's chosen metric, else `acc`, else the first.

    lm-eval names metrics "metric,filter"; keys without a comma are bookkeeping (sample_len).
    """
    chosen = {request.name: request.metric for request in requests if request.metric}
    keys = {}
    for name, metrics in results.items():
        numeric = [
            key
            for key, value in metrics.items()
            if "," in key
            and "_stderr" not in key
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
        ]
        key = chosen.get(name) or ("acc,none" if "acc,none" in numeric else next(iter(numeric), None))
        if key in numeric:
            keys[name] = key
    return keys


def headline_metrics(results: dict[str, dict[str, Any]], requests: list[TaskRequest]) -> dict[str, float]:
    """One number per result entry (see `headline_keys`)."""
    return {name: float(results[name][key]) for name, key in headline_keys(results, requests).items()}


def document_scores(samples: dict[str, list[dict[str, Any]]], keys: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Task → its headline metric per document, in document order.

    Two variants answer the same documents, so their difference per document gives a paired
    standard error of the gap between them, far tighter than the two scores' own errors
    when the variants agree on most documents (docs/evaluation.md).
    """
    found = {}
    for task, key in keys.items():
        metric, _, filter_key = key.partition(",")
        rows = sorted((s for s in samples.get(task, []) if s.get("filter") == filter_key), key=lambda s: s["doc_id"])
        scores = [s.get(metric) for s in rows]
        if rows and all(isinstance(v, (int, float)) for v in scores):  # a bool is a 0/1 score
            found[task] = {"metric": key, "doc_ids": [int(s["doc_id"]) for s in rows], "scores": [float(v) for v in scores]}
    return found
