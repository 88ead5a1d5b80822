"""One evaluation session: check everything, load the model (and its reference) once, measure, write.

The three evaluation verbs (`eval-ppl`, `eval-tasks`, `evaluate`) differ only in which halves
they run; the order lives here. Everything that can fail on bad input (devices, dtypes,
dataset names, window lengths, texts) is checked before a model that may take minutes to
read is loaded, and every result file is written as soon as its numbers exist.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from moequant.artifacts import write_json
from moequant.errors import UsageError
from moequant.progress import say

if TYPE_CHECKING:
    import torch

    from moequant.eval.config import PerplexityConfig, TaskConfig
    from moequant.eval.lm_eval_bridge import PreparedTasks

NAME_PLACEHOLDER = "{dataset}"
_DATASET_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


@dataclass(frozen=True)
class ModelChoice:
    """What is evaluated, against which full-precision reference (for KL), and whether its code is trusted."""

    model: str
    reference: str | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class Placement:
    """Where and in which precision the model (and the reference) run."""

    device: torch.device
    dtype: torch.dtype
    reference_device: torch.device
    device_map: str | None = None
    reference_device_map: str | None = None

    @classmethod
    def resolve(cls, device: str, dtype: str, reference_device: str | None = None) -> Placement:
        """Devices and dtype, checked first so a typo fails before any text or model is read."""
        from moequant.eval.config import eval_dtype
        from moequant.runtime import resolve_device, spread_map

        where = resolve_device(device)
        reference = reference_device or device
        return cls(
            where, eval_dtype(dtype, where), resolve_device(reference), spread_map(device), spread_map(reference)
        )


def parse_datasets(values: list[str], out: str, out_flag: str = "--out") -> dict[str, str]:
    """NAME=SPEC (or a bare SPEC, named after itself) → spec per name, checked against the output path.

    The name must be plain so `text:/a=b.txt` stays one spec: a left side holding ':' or '/'
    is not a name.
    """
    datasets: dict[str, str] = {}
    for value in values:
        name, sep, spec = value.partition("=")
        if not sep or not _DATASET_NAME.fullmatch(name):
            name, spec = value, value
        if name in datasets:
            raise UsageError(f"dataset name {name!r} is given twice; each --dataset needs its own NAME=")
        datasets[name] = spec
    if len(datasets) > 1 and NAME_PLACEHOLDER not in out:
        raise UsageError(f"{out_flag} {out!r} must contain {NAME_PLACEHOLDER} when several --dataset are given")
    return datasets


def output_path(out: str, name: str) -> str:
    return out.replace(NAME_PLACEHOLDER, name)


@dataclass
class PerplexityPlan:
    """Checked configs and loaded texts, ready before any model is read."""

    out: str
    configs: dict[str, PerplexityConfig]
    texts: dict[str, str]


def plan_perplexity(datasets: dict[str, str], base: PerplexityConfig, out: str, choice: ModelChoice) -> PerplexityPlan:
    """One config per dataset (the others' settings from `base`), window lengths checked, texts read."""
    from moequant.eval.datasets import load_eval_text
    from moequant.eval.perplexity import precheck_seqlen

    configs = {name: replace(base, dataset=spec) for name, spec in datasets.items()}
    for spec in filter(None, (choice.model, choice.reference)):
        precheck_seqlen(spec, base.seqlen, choice.trust_remote_code)
    texts = {name: load_eval_text(config.dataset, config.data_path) for name, config in configs.items()}
    return PerplexityPlan(out, configs, texts)


@dataclass
class LoadedModels:
    """The model under test, its tokenizer and (for KL) the reference, with the time loading took."""

    model: torch.nn.Module
    tokenizer: Any
    reference: torch.nn.Module | None
    device: torch.device
    dtype: torch.dtype
    seconds: float

    def drop_reference(self) -> None:
        """Free the reference once perplexity is done; lm-eval needs only the model."""
        import torch

        self.reference = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _load_reference(choice: ModelChoice, model: torch.nn.Module, where: Placement) -> torch.nn.Module:
    from moequant.loading import load_model

    assert choice.reference is not None
    loaded = load_model(
        choice.reference, dtype=where.dtype, device=where.reference_device, trust_remote_code=choice.trust_remote_code,
        device_map=where.reference_device_map,
    )
    if loaded.config.vocab_size != model.config.vocab_size:
        raise UsageError(
            f"reference {choice.reference!r} has vocabulary size {loaded.config.vocab_size}, "
            f"the model {model.config.vocab_size}: KL needs the same vocabulary"
        )
    return loaded


def load_models(choice: ModelChoice, where: Placement, with_reference: bool = True) -> LoadedModels:
    """The model and its tokenizer, and the reference model when one is chosen and wanted."""
    from moequant.loading import load_model, load_tokenizer

    started = time.perf_counter()
    tokenizer = load_tokenizer(choice.model, trust_remote_code=choice.trust_remote_code)
    model = load_model(
        choice.model, dtype=where.dtype, device=where.device, trust_remote_code=choice.trust_remote_code,
        device_map=where.device_map,
    )
    reference = _load_reference(choice, model, where) if with_reference and choice.reference else None
    return LoadedModels(model, tokenizer, reference, where.device, where.dtype, time.perf_counter() - started)


def measure_and_write(plan: PerplexityPlan, loaded: LoadedModels, choice: ModelChoice, progress: bool = True) -> None:
    """One JSON per dataset, each written as soon as it is measured."""
    from moequant.eval.perplexity import measure_perplexity
    from moequant.eval.provenance import model_provenance, run_metadata

    for index, (name, config) in enumerate(plan.configs.items(), start=1):
        say("perplexity", f"dataset {index}/{len(plan.configs)} {name}: measuring")
        measuring = time.perf_counter()
        measured = measure_perplexity(
            loaded.model, loaded.tokenizer, config, reference=loaded.reference, progress=progress, text=plan.texts[name]
        )
        out = output_path(plan.out, name)
        write_json(
            out,
            {
                **measured,
                "name": name,
                "model": model_provenance(choice.model),
                "reference": model_provenance(choice.reference) if choice.reference else None,
                "config": asdict(config),
                **run_metadata(loaded.device, loaded.dtype, loaded.seconds + time.perf_counter() - measuring),
            },
        )
        summary = f"ppl {measured['ppl']:.4f} over {measured['tokens']} tokens"
        if loaded.reference is not None:
            summary += f", kld {measured['kld']:.6f}, top1_agree {measured['top1_agree']:.4f}"
        print(f"{name}: {summary} -> {out}", flush=True)


def evaluate_and_write(out: str, config: TaskConfig, prepared: PreparedTasks, loaded: LoadedModels, choice: ModelChoice) -> None:
    """Run the prepared lm-eval tasks on the loaded model and write `out` with its provenance."""
    import lm_eval

    from moequant.eval.lm_eval_bridge import run_tasks
    from moequant.eval.provenance import model_provenance, run_metadata

    started = time.perf_counter()
    evaluated = run_tasks(loaded.model, loaded.tokenizer, prepared, config)
    write_json(
        out,
        {
            **evaluated,
            "model": model_provenance(choice.model),
            "config": asdict(config),
            "lm_eval_version": getattr(lm_eval, "__version__", None),
            **run_metadata(loaded.device, loaded.dtype, loaded.seconds + time.perf_counter() - started),
        },
    )
    shown = ", ".join(f"{name} {value:.4f}" for name, value in evaluated["summary"].items())
    avg = f"; avg {evaluated['avg']:.4f}" if evaluated["avg"] is not None else ""
    print(f"{shown}{avg} -> {out}")
