"""`moequant eval-ppl`: perplexity (and KL to a reference) of a model, checkpoint or Hub id.

Several `--dataset NAME=SPEC` share one model load and one reference load: on a laptop the
process start-up and the loads cost more than a small text's forward, and on a cluster
reading Mixtral twice per dataset is the expensive part.
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from moequant.artifacts import write_json
from moequant.errors import UsageError
from moequant.progress import say

if TYPE_CHECKING:
    import torch

    from moequant.eval.config import PerplexityConfig

NAME = "eval-ppl"
HELP = "Perplexity on wikitext2, c4 or text:PATH; with --reference also KL divergence and top-1 agreement."
NAME_PLACEHOLDER = "{dataset}"
_DATASET_NAME = re.compile(r"[A-Za-z0-9_.+-]+")


def parse_datasets(values: list[str], out: str, out_flag: str = "--out") -> dict[str, str]:
    """NAME=SPEC (or a bare SPEC, named after itself) → spec per name, checked against `--out`.

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


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags both evaluation verbs share: what to load, where, in which precision."""
    parser.add_argument("--model", required=True, help="HF id, model directory or quantized checkpoint directory")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--dtype", default="auto", help="auto (float16 on CUDA, float32 on CPU) or a torch dtype name")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model directory")


def add_ppl_arguments(parser: argparse.ArgumentParser) -> None:
    """Which texts, which windows, and the reference: shared with `moequant evaluate`."""
    parser.add_argument(
        "--dataset",
        required=True,
        action="append",
        help="wikitext2, c4 or text:PATH (.txt or .jsonl with 'text'), optionally NAME=SPEC; repeat for several",
    )
    parser.add_argument("--seqlen", type=int, default=2048, help="window length in tokens (default 2048)")
    parser.add_argument("--reference", help="full-precision model for KL(reference‖model) and top-1 agreement")
    parser.add_argument("--batch-size", type=int, default=1, help="windows per forward pass")
    parser.add_argument("--max-windows", type=int, help="evaluate only the first N windows of each dataset")
    parser.add_argument("--random-windows", type=int, default=256, help="windows drawn from c4 (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the c4 window draw (default 0)")
    parser.add_argument("--data-path", help="local copy of the Hub dataset (save_to_disk dir, repo clone or file)")
    parser.add_argument("--reference-device", help="device of the reference model (default: --device)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_ppl_arguments(parser)
    parser.add_argument("--out", required=True, help="output JSON file; with several datasets a path with {dataset}")


@dataclass
class PerplexityPlan:
    """Checked configs and loaded texts, ready before any model is read."""

    out: str
    configs: dict[str, PerplexityConfig]
    texts: dict[str, str]


def plan_perplexity(args: argparse.Namespace, out: str, out_flag: str = "--out") -> PerplexityPlan:
    """Everything that can fail on bad input, done before the (possibly minutes-long) model loads."""
    from moequant.eval.config import PerplexityConfig
    from moequant.eval.datasets import load_eval_text
    from moequant.eval.perplexity import precheck_seqlen

    datasets = parse_datasets(args.dataset, out, out_flag)
    base = PerplexityConfig(
        dataset=next(iter(datasets.values())),
        seqlen=args.seqlen,
        batch_size=args.batch_size,
        max_windows=args.max_windows,
        random_windows=args.random_windows,
        seed=args.seed,
        data_path=args.data_path,
    )
    configs = {name: replace(base, dataset=spec) for name, spec in datasets.items()}
    for spec in filter(None, (args.model, args.reference)):
        precheck_seqlen(spec, base.seqlen, args.trust_remote_code)
    texts = {name: load_eval_text(config.dataset, config.data_path) for name, config in configs.items()}
    return PerplexityPlan(out, configs, texts)


@dataclass(frozen=True)
class Placement:
    """Where and in which precision the model (and the reference) run."""

    device: torch.device
    dtype: torch.dtype
    reference_device: torch.device


def placement(args: argparse.Namespace, reference_device: str | None = None) -> Placement:
    """Devices and dtype, checked first so a typo fails before any text or model is read."""
    from moequant.eval.config import eval_dtype
    from moequant.runtime import resolve_device

    device = resolve_device(args.device)
    return Placement(device, eval_dtype(args.dtype, device), resolve_device(reference_device) if reference_device else device)


@dataclass
class LoadedModels:
    """The model under test, its tokenizer and (for KL) the reference, with the time loading took."""

    model: torch.nn.Module
    tokenizer: Any
    reference: torch.nn.Module | None
    device: torch.device
    dtype: torch.dtype
    seconds: float


def load_reference(args: argparse.Namespace, reference: str, model: torch.nn.Module, where: Placement) -> torch.nn.Module:
    from moequant.models.loading import load_model

    loaded = load_model(reference, dtype=where.dtype, device=where.reference_device, trust_remote_code=args.trust_remote_code)
    if loaded.config.vocab_size != model.config.vocab_size:
        raise UsageError(
            f"reference {reference!r} has vocabulary size {loaded.config.vocab_size}, "
            f"the model {model.config.vocab_size}: KL needs the same vocabulary"
        )
    return loaded


def load_models(args: argparse.Namespace, where: Placement, reference: str | None = None) -> LoadedModels:
    """The model and its tokenizer, and the reference model when one is named."""
    from moequant.models.loading import load_model, load_tokenizer

    started = time.perf_counter()
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    model = load_model(args.model, dtype=where.dtype, device=where.device, trust_remote_code=args.trust_remote_code)
    loaded_reference = load_reference(args, reference, model, where) if reference else None
    return LoadedModels(model, tokenizer, loaded_reference, where.device, where.dtype, time.perf_counter() - started)


def measure_and_write(args: argparse.Namespace, plan: PerplexityPlan, loaded: LoadedModels) -> None:
    """One JSON per dataset, each written as soon as it is measured."""
    from moequant.eval.perplexity import measure_perplexity
    from moequant.eval.provenance import model_provenance, run_metadata

    for index, (name, config) in enumerate(plan.configs.items(), start=1):
        say("perplexity", f"dataset {index}/{len(plan.configs)} {name}: measuring")
        measuring = time.perf_counter()
        measured = measure_perplexity(
            loaded.model,
            loaded.tokenizer,
            config,
            reference=loaded.reference,
            progress=not args.no_progress,
            text=plan.texts[name],
        )
        out = output_path(plan.out, name)
        write_json(
            out,
            {
                **measured,
                "name": name,
                "model": model_provenance(args.model),
                "reference": model_provenance(args.reference) if args.reference else None,
                "config": asdict(config),
                **run_metadata(loaded.device, loaded.dtype, loaded.seconds + time.perf_counter() - measuring),
            },
        )
        summary = f"ppl {measured['ppl']:.4f} over {measured['tokens']} tokens"
        if loaded.reference is not None:
            summary += f", kld {measured['kld']:.6f}, top1_agree {measured['top1_agree']:.4f}"
        print(f"{name}: {summary} -> {out}", flush=True)


def run(args: argparse.Namespace) -> int:
    where = placement(args, args.reference_device)
    plan = plan_perplexity(args, args.out)
    measure_and_write(args, plan, load_models(args, where, args.reference))
    return 0
