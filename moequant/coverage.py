"""Which MoE families of the installed transformers each stage handles, measured, not declared.

Every MoE model type transformers ships is built as a tiny random instance from its own
config class and run through every stage on real modeling code:

- adapter: each expert weight reads and writes in place (the bank's per-expert function equals
  the experts module's own forward, before and after a write through the views), and the
  routing read from the block equals what the model's forward hands its experts;
- rtn / gptq / agq: quantize, write the compressed-tensors checkpoint, load it with stock
  transformers, and get the in-memory quantized logits back exactly;
- rotate: float64 rotation keeps logits within 1e-5 (relative) and routing identical;
- sigma / ebss: the balance metric and a short expert-balanced search run.

A stage ends `pass`, `refused` (moequant's own one-line refusal, with its reason) or `failed`
(anything else: a bug or a family moequant mishandles). `moequant families` prints the table.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from moequant.errors import UsageError

STAGES = ("build", "adapter", "rtn", "gptq", "agq", "rotate", "sigma", "ebss")
_CALIB_SHAPE = (4, 16)
_PROBE_SHAPE = (2, 12)
_ROTATION_TOLERANCE = 1e-5


@dataclass
class Outcome:
    status: str
    detail: str = ""

    def cell(self) -> str:
        return self.status if not self.detail else f"{self.status}: {self.detail}"


@dataclass
class FamilyReport:
    model_type: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def passed(self, stage: str) -> bool:
        return self.outcomes.get(stage, Outcome("skipped")).status == "pass"


class _Mismatch(Exception):
    """A stage ran but its result differs from the model's own computation."""


def moe_model_types() -> list[str]:
    """Causal-LM model types of the installed transformers whose config class has an expert-count field.

    The field's presence decides, not its default value: some families (dots1) default it to None.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    from transformers.utils import logging

    from moequant.models import EXPERT_COUNT_KEYS

    found = []
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # default configs warn about their own defaults; none of it concerns a listing
    try:
        for model_type in sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
            try:
                config = AutoConfig.for_model(model_type)
                text = config.get_text_config() if hasattr(config, "get_text_config") else config
            except Exception:  # noqa: BLE001 — a config class that cannot be built is no MoE we can check
                continue
            if any(key in vars(text) for key in EXPERT_COUNT_KEYS):
                found.append(model_type)
    finally:
        logging.set_verbosity(verbosity)
    return found


def _ids(shape: tuple[int, int], vocab: int, seed: int) -> torch.Tensor:
    return torch.randint(3, vocab, shape, generator=torch.Generator().manual_seed(seed))


def _vocab(model: nn.Module) -> int:
    return int(model.get_input_embeddings().weight.shape[0])


@torch.no_grad()
def check_adapter(model: nn.Module) -> None:
    from moequant.models import adapt
    from moequant.models.routing import capture_routing

    adapter = adapt(model)
    ids = _ids(_PROBE_SHAPE, _vocab(model), 1)
    inputs: dict[int, torch.Tensor] = {}
    handles = [
        layer.mlp.module.register_forward_pre_hook(lambda _m, args, index=layer.index: inputs.__setitem__(index, args[0]))
        for layer in adapter.moe_layers
    ]
    try:
        with capture_routing(adapter) as records:
            model(ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    for layer in adapter.moe_layers:
        block = layer.mlp
        seen_ids, seen_coeffs = records[layer.index][0]
        ids_, coeffs = block.router.route(inputs[layer.index])
        if not (torch.equal(ids_, seen_ids) and torch.allclose(coeffs, seen_coeffs, rtol=1e-5, atol=1e-7)):
            raise _Mismatch(f"layer {layer.index}: routing read from the block differs from the forward's")
        if block.router.parse is not None:
            continue
        x = inputs[layer.index].reshape(-1, inputs[layer.index].shape[-1])
        for scale in (1.0, 0.5):
            if scale != 1.0:
                for proj in ("gate", "up", "down"):
                    block.experts.write(proj, block.experts.weights(proj) * scale)
            own = block.router.experts_module(x, ids_, coeffs)
            rebuilt = block.experts.routed_forward(x, ids_, coeffs)
            if not torch.allclose(own, rebuilt, rtol=1e-4, atol=1e-5):
                raise _Mismatch(f"layer {layer.index}: per-expert views do not reproduce the experts module (scale {scale})")


@torch.no_grad()
def check_quantize(model: nn.Module, algo: str) -> None:
    from moequant.quant.checkpoint import load_quantized, save_quantized
    from moequant.quant.registry import configure, get

    config = configure(algo, wbits=4, device="cpu")
    quantized = copy.deepcopy(model)
    result = get(algo).quantize(quantized, _ids(_CALIB_SHAPE, _vocab(model), 0), config)
    probe = _ids(_PROBE_SHAPE, _vocab(model), 2)
    expected = quantized(probe, use_cache=False).logits
    with tempfile.TemporaryDirectory() as tmp:
        out = save_quantized(Path(tmp) / "ckpt", quantized, result, {"method": algo, "config": config.to_dict()})
        try:
            loaded = load_quantized(out)
        except UsageError as err:
            raise _Mismatch(f"stock transformers cannot load the written checkpoint ({str(err).replace(str(out), 'it')})") from None
        got = loaded(probe, use_cache=False).logits
    if not torch.equal(expected, got):
        raise _Mismatch(f"reloaded logits differ by up to {float((expected - got).abs().max()):.3g}")


@torch.no_grad()
def check_rotate(model: nn.Module) -> None:
    from moequant.models import adapt
    from moequant.models.routing import capture_routing
    from moequant.rotation import RotationConfig, rotate_model

    reference = copy.deepcopy(model).double()
    if hasattr(reference, "set_experts_implementation"):
        reference.set_experts_implementation("eager")  # the grouped kernels take no float64
    rotated = copy.deepcopy(reference)
    rotate_model(rotated, RotationConfig(seed=0))
    probe = _ids(_PROBE_SHAPE, _vocab(model), 3)
    routes = []
    for candidate in (reference, rotated):
        with capture_routing(adapt(candidate)) as records:
            logits = candidate(probe, use_cache=False).logits
        routes.append((logits, [ids for layer in records.values() for ids, _ in layer]))
    (before, ids_before), (after, ids_after) = routes
    error = float((after - before).abs().max() / before.abs().max())
    if not error <= _ROTATION_TOLERANCE:
        raise _Mismatch(f"rotated logits deviate by {error:.2g} (relative)")
    if not all(torch.equal(a, b) for a, b in zip(ids_before, ids_after)):
        raise _Mismatch("rotation changed the routing")


@torch.no_grad()
def check_sigma(model: nn.Module) -> None:
    from moequant.calib.balance import sigma
    from moequant.models import adapt
    from moequant.models.routing import expert_counts

    counts = expert_counts(adapt(model), _ids(_PROBE_SHAPE, _vocab(model), 4))
    if not torch.isfinite(sigma(counts)):
        raise _Mismatch("σ is not finite")


@torch.no_grad()
def check_ebss(model: nn.Module) -> None:
    from moequant.calib.ebss import ebss_generate, first_tokens
    from moequant.models import adapt

    allowed = torch.ones(_vocab(model), dtype=torch.bool)
    allowed[:3] = False
    result = ebss_generate(adapt(model), first_tokens(allowed, 2, 0), allowed, seqlen=6, width=2, batch_size=2)
    if tuple(result.input_ids.shape) != (2, 6):
        raise _Mismatch(f"EBSS returned shape {tuple(result.input_ids.shape)}")


def _run(check: Callable[[], None]) -> Outcome:
    try:
        check()
    except UsageError as err:
        return Outcome("refused", str(err))
    except _Mismatch as err:
        return Outcome("failed", str(err))
    except Exception as err:  # noqa: BLE001 — the table records any failure instead of stopping the survey
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        cause = str(err.__cause__).strip().splitlines()[0] if err.__cause__ and str(err.__cause__).strip() else ""
        return Outcome("failed", f"{type(err).__name__}: {first[:160]}" + (f" ({cause[:120]})" if cause else ""))
    return Outcome("pass")


def check_family(model_type: str) -> FamilyReport:
    """Every stage on a tiny random instance of `model_type`; later stages skip once the adapter fails."""
    from moequant.models.synthetic import tiny_any_model

    report = FamilyReport(model_type)
    built: list[nn.Module] = []
    report.outcomes["build"] = _run(lambda: built.append(tiny_any_model(model_type)))
    if not built:
        return report
    model = built[0]
    report.outcomes["adapter"] = _run(lambda: check_adapter(copy.deepcopy(model)))
    if not report.passed("adapter"):
        return report
    for algo in ("rtn", "gptq", "agq"):
        report.outcomes[algo] = _run(lambda algo=algo: check_quantize(model, algo))
    report.outcomes["rotate"] = _run(lambda: check_rotate(model))
    report.outcomes["sigma"] = _run(lambda: check_sigma(model))
    report.outcomes["ebss"] = _run(lambda: check_ebss(model))
    return report


def markdown_table(reports: list[FamilyReport]) -> str:
    import transformers

    quantizing = [r.model_type for r in reports if all(r.passed(s) for s in ("rtn", "gptq", "agq"))]
    rotating = [r.model_type for r in reports if r.passed("rotate")]
    lines = [
        f"MoE families of transformers {transformers.__version__}: {len(reports)} model types, "
        f"{len(quantizing)} quantize with RTN, GPTQ and AGQ (reload exact), {len(rotating)} rotate exactly.",
        "",
        "| model type | " + " | ".join(STAGES) + " |",
        "|---" * (len(STAGES) + 1) + "|",
    ]
    for report in reports:
        cells = [report.outcomes[s].cell().replace("|", "/") if s in report.outcomes else "—" for s in STAGES]
        lines.append(f"| {report.model_type} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
