"""Layer streaming: the calibration batch flows through the model one decoder layer at a time.

Only the decoder layer being quantized sits on the compute device; the rest of the model
stays where it was loaded (CPU), so the model is never held twice. The layer-0 inputs are
captured once by a hook that raises after recording what the model passes to the first
layer; after a layer is quantized its outputs become the next layer's inputs, so every
layer is calibrated on what the already-quantized layers below it produce.

An algorithm supplies `quantize_layer(ctx)`; it runs the calibration batch through the
layer as often as it has stages (`ctx.each_batch`), each run stopping as soon as the
modules it listens to have seen their inputs. A part of the layer whose weights are final
(`ctx.settle`, the token mixer once its linears are quantized) is computed once more and
then replayed, so the later stages and the output pass do not recompute it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from moequant.errors import UsageError
from moequant.memory import MemoryPlan, module_bytes
from moequant.models import DecoderLayer, ModelAdapter, adapt, forwards_replaced
from moequant.progress import each, say
from moequant.quant.config import QuantConfig
from moequant.quant.hessian import check_finite_activations
from moequant.quant.journal import LayerJournal
from moequant.quant.layer_store import LayerStore
from moequant.quant.report import QuantResult
from moequant.quant.targets import LayerTargets, model_targets
from moequant.runtime import resolve_device


class _Stop(Exception):
    """Raised from a hook once everything a stage needs from the forward pass is recorded."""


class _CalledTwice(Exception):
    """Raised by a replayed module called a second time in one forward (its recording pass
    stopped before the second call): the micro-batch is run again without replaying it."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module


@dataclass
class _Settled:
    """The outputs of a module whose weights are final, per calibration micro-batch."""

    outputs: dict[int, Any] = field(default_factory=dict)
    replayable: bool = True
    """False once a forward called it twice: then which call an output belongs to is unknown."""

    def abandon(self) -> None:
        self.replayable = False
        self.outputs.clear()


def _cloned(output: Any) -> Any:
    """A copy of a module's output (a tensor or a tuple holding some), so a layer that edits what
    it receives in place cannot change what is replayed."""
    if isinstance(output, torch.Tensor):
        return output.clone()
    if isinstance(output, tuple):
        return tuple(_cloned(part) for part in output)
    return output


@dataclass
class LayerContext:
    layer: DecoderLayer
    targets: LayerTargets
    config: QuantConfig
    device: torch.device
    result: QuantResult
    inputs: list[torch.Tensor]
    kwargs: list[dict[str, Any]]
    state: dict[str, Any] = field(default_factory=dict)
    settled: dict[nn.Module, _Settled] = field(default_factory=dict)

    def where(self, module: str) -> str:
        return f"layer {self.layer.index} module {module}"

    def settle(self, module: nn.Module) -> None:
        """`module`'s weights are final: the next pass through it records its output for each
        micro-batch, and every later pass gets that output back instead of recomputing it.

        Exact because a module's output depends only on its weights and inputs, and what
        feeds it (the layer input, unquantized norms, the captured masks) never changes.
        """
        self.settled.setdefault(module, _Settled())

    @contextmanager
    def _replaying(self, batch: int) -> Iterator[None]:
        replays, handles, replayed = {}, [], set()

        def replay(module: nn.Module, output: Any) -> Callable[..., Any]:
            def forward(*_args: Any, **_kwargs: Any) -> Any:
                if module in replayed:
                    raise _CalledTwice(module)
                replayed.add(module)
                return _cloned(output)

            return forward

        for module, settled in self.settled.items():
            if not settled.replayable:
                continue
            if batch in settled.outputs:
                replays[module] = replay(module, settled.outputs[batch])
                continue

            def record(module, _args, output, settled=settled):
                if batch in settled.outputs:
                    settled.abandon()
                elif settled.replayable:
                    settled.outputs[batch] = _cloned(output)
                    for inner in module.modules():  # replaying `module` never calls them again
                        if inner is not module and inner in self.settled:
                            self.settled[inner].outputs.pop(batch, None)

            handles.append(module.register_forward_hook(record))
        try:
            with forwards_replaced(replays):
                yield
        finally:
            for handle in handles:
                handle.remove()

    @torch.no_grad()
    def each_batch(self, modules: dict[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
        """For each calibration micro-batch, the inputs the named modules receive in the layer's forward.

        The forward stops once every named module has been called, so a stage pays only
        for the part of the layer it needs.
        """
        for batch, (hidden, kwargs) in enumerate(zip(self.inputs, self.kwargs)):
            seen: dict[str, torch.Tensor] = {}
            handles = []
            for name, module in modules.items():

                def hook(_module, args, kw, name=name):
                    x = args[0] if args else next(iter(kw.values()))
                    check_finite_activations(x, self.where(name))
                    seen[name] = x
                    if len(seen) == len(modules):
                        raise _Stop

                handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
            try:
                self.forward(batch, hidden, kwargs)
            except _Stop:
                pass
            finally:
                for handle in handles:
                    handle.remove()
            missing = sorted(set(modules) - set(seen))
            if missing:
                raise UsageError(
                    f"{self.where(', '.join(missing))}: the layer's forward uses its weight without calling the module "
                    "(a fused kernel path), so GPTQ cannot see its inputs; quantize this family with RTN"
                )
            yield seen

    def forward(self, batch: int, hidden: torch.Tensor, kwargs: dict[str, Any]) -> Any:
        """The layer's own forward on captured micro-batch `batch`; a layer that cannot run alone is refused.

        Layers that read state an earlier layer leaves behind (hy-v4's shared DSA indices)
        fail here, since a layer-by-layer pass hands each layer only its captured inputs.
        """
        try:
            while True:
                try:
                    with self._replaying(batch):
                        return self.layer.module(hidden, **kwargs)
                except _CalledTwice as twice:
                    self.settled[twice.module].abandon()
        except UsageError:
            raise
        except ValueError as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UsageError(
                f"layer {self.layer.index}: its forward does not run on its captured inputs alone ({reason}); "
                "a layer-by-layer pass cannot quantize this family with GPTQ, use RTN"
            ) from None

    @torch.no_grad()
    def outputs(self) -> list[torch.Tensor]:
        outs = []
        for batch, (hidden, kwargs) in enumerate(zip(self.inputs, self.kwargs)):
            out = self.forward(batch, hidden, kwargs)
            out = out[0] if isinstance(out, tuple) else out
            check_finite_activations(out, self.where("output"))
            outs.append(out)
        return outs


def check_groupsize(adapter: ModelAdapter, config: QuantConfig) -> None:
    for address, target in model_targets(adapter, config.run.quantize_router).items():
        config.grid.check_in_features(target.in_features, address)


def layer_kinds(adapter: ModelAdapter) -> list[str | None]:
    """Each decoder layer's attention kind (`layer_types`): layers of different kinds get different masks."""
    config = adapter.model.config
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    kinds = getattr(config, "layer_types", None)
    if not isinstance(kinds, list) or len(kinds) != len(adapter.layers):
        return [None] * len(adapter.layers)
    return list(kinds)


@torch.no_grad()
def capture_inputs_by_kind(
    adapter: ModelAdapter, calib: torch.Tensor, batch_size: int, device: torch.device
) -> tuple[list[torch.Tensor], list[dict[str | None, dict[str, Any]]]]:
    """Layer-0 hidden states per micro-batch, and the keyword arguments the model hands a layer of each kind.

    Sliding-window and full-attention layers receive different masks, so the arguments are
    recorded at the first layer of every kind (the forward runs on to the last of those).
    """
    layers = adapter.decoder_layers
    kinds = layer_kinds(adapter)
    firsts = {kind: kinds.index(kind) for kind in dict.fromkeys(kinds)}
    top = _outside(adapter.model, layers)
    originals = [_device_of(m) for m in top]
    for module in top:
        module.to(device)
    inputs: list[torch.Tensor] = []
    by_kind: list[dict[str | None, dict[str, Any]]] = []

    def hook(_module, args, kwargs, kind=None, first=False):
        hidden = args[0] if args else kwargs.get("hidden_states")
        if first:
            inputs.append(hidden)
            by_kind.append({})
        by_kind[-1][kind] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        if len(by_kind[-1]) == len(firsts):
            raise _Stop

    handles = [
        layers[index].register_forward_pre_hook(
            lambda m, a, kw, kind=kind, first=index == 0: hook(m, a, kw, kind, first), with_kwargs=True
        )
        for kind, index in firsts.items()
    ]
    try:
        for start in range(0, calib.shape[0], batch_size):
            try:
                adapter.model(input_ids=calib[start : start + batch_size].to(device), use_cache=False)
            except _Stop:
                pass
    finally:
        for handle in handles:
            handle.remove()
        for module, original in zip(top, originals):
            module.to(original)
    return inputs, by_kind


def capture_layer_inputs(
    adapter: ModelAdapter, calib: torch.Tensor, batch_size: int, device: torch.device
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Hidden states and keyword arguments the model hands its first decoder layer, per micro-batch."""
    inputs, by_kind = capture_inputs_by_kind(adapter, calib, batch_size, device)
    kind = layer_kinds(adapter)[0]
    return inputs, [entry[kind] for entry in by_kind]


def _outside(root: nn.Module, layers: nn.Module) -> list[nn.Module]:
    """The largest submodules of `root` that neither contain nor lie inside `layers`."""
    path = next(name for name, module in root.named_modules() if module is layers).split(".")
    top, node = [], root
    for step in path:
        top.extend(child for name, child in node.named_children() if name != step)
        node = getattr(node, step)
    return top


def _device_of(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def activation_width(adapter: ModelAdapter) -> int:
    """Calibration activations held per token while a layer is quantized, in elements: its inputs,
    outputs, the cached MoE-block input and the replayed token-mixer output (hidden each), and
    the replayed attention readers' outputs (counted for every reader, settled or not)."""
    hidden = adapter.embed_tokens.weight.shape[1]
    readers = max((sum(m.out_features for m in layer.attention.readers.values()) for layer in adapter.layers), default=0)
    return 4 * hidden + readers


def memory_plan(
    adapter: ModelAdapter, tokens: int, dtype: torch.dtype, config: QuantConfig, streaming: bool = False
) -> MemoryPlan:
    """What streaming quantization of `adapter`'s model holds at its peak, from a (meta) skeleton.

    In memory, the model stays on the host and the packed codes accumulate there until the
    checkpoint is written. Streamed from disk, the host holds what lies outside the decoder
    layers, one layer being quantized and its export (dense copies and codes of one layer).
    The compute device holds one decoder layer, the calibration activations between layers
    (inputs, outputs, the cached MoE-block input and the settled token mixer's output, each
    tokens × hidden, and the settled attention readers' outputs) and the largest
    Hessian stack (all experts of a projection).
    """
    device = resolve_device(config.run.device)
    element = torch.empty((), dtype=dtype).element_size()
    hessian_element = 8 if config.run.hessian_dtype == "float64" else 4
    stacks = []
    for layer in adapter.layers:
        linears = layer.named_linears().values()
        stacks.append(max((m.in_features for m in linears), default=0) ** 2)
        if layer.is_moe:
            bank = layer.mlp.experts
            stacks.append(bank.num_experts * max(bank.hidden_size, bank.intermediate_size) ** 2)
    largest = max(module_bytes(layer.module, dtype) for layer in adapter.layers)
    plan = MemoryPlan("quantize", device)
    if streaming:
        outside = module_bytes(adapter.model, dtype) - sum(module_bytes(layer.module, dtype) for layer in adapter.layers)
        plan.host = {"outside the layers": outside, "layer and its export": 2 * largest, "codes": largest * config.grid.wbits // (8 * element)}
    else:
        weights = sum(t.numel() for layer in adapter.layers for t in layer.module.parameters())
        plan.host = {"model": module_bytes(adapter.model, dtype), "codes": weights * config.grid.wbits // 8}
    if device.type != "cpu":
        plan.on_device["layer"] = largest
    plan.on_device["activations"] = activation_width(adapter) * tokens * element
    plan.on_device["Hessians"] = max(stacks, default=0) * hessian_element
    return plan


def layer_progress(layers: list[DecoderLayer], label: str, result: QuantResult) -> Iterator[DecoderLayer]:
    """One line per finished decoder layer, with the solver fallbacks counted so far."""
    return each(layers, label, "layer", detail=lambda: f"fallbacks: {result.summary()['fallbacks'] or 'none'}")


@torch.no_grad()
def stream_quantize(
    model: nn.Module,
    calib: torch.Tensor,
    config: QuantConfig,
    quantize_layer: Callable[[LayerContext], None],
    journal: LayerJournal | None = None,
    store: LayerStore | None = None,
) -> QuantResult:
    """Quantize `model` in place layer by layer with `quantize_layer`; returns codes and report.

    With a `journal`, every finished layer is recorded there and a rerun continues after the
    last recorded layer instead of starting over. With a `store`, each layer is loaded just
    before it is quantized and stored right after.
    """
    adapter = adapt(model)
    check_groupsize(adapter, config)
    unknown = sorted({name for layer in adapter.layers for name in layer.attention.other})
    if unknown:
        plain = sum(1 for layer in adapter.layers if layer.attention.other)
        say("quantize", f"{plain} layers have token-mixer linears of unknown role, quantized with plain GPTQ: {', '.join(unknown)}")
    device = resolve_device(config.run.device)
    result = QuantResult()
    inputs, by_kind = capture_inputs_by_kind(adapter, calib, config.run.batch_size, device)
    kinds = layer_kinds(adapter)
    start = 0
    restored = journal.restore(adapter, result, store) if journal is not None else None
    if restored is not None:
        start, saved = restored
        inputs = [x.to(device=device, dtype=hidden.dtype) for x, hidden in zip(saved, inputs)]
    for layer in layer_progress(adapter.layers[start:], f"quantize {config.algo} w{config.grid.wbits}", result):
        weights_before, rows_before = len(result.weights), len(result.rows)
        if store is not None:
            store.load(layer)
        home = _device_of(layer.module)
        layer.module.to(device)
        kwargs = [entry[kinds[layer.index]] for entry in by_kind]
        ctx = LayerContext(layer, LayerTargets.of(layer, config.run.quantize_router), config, device, result, inputs, kwargs)
        quantize_layer(ctx)
        inputs = ctx.outputs()
        ctx.settled.clear()  # the replayed activations, before the layer moves and the next loads
        layer.module.to(home)
        if journal is not None:
            journal.record(layer, result, weights_before, rows_before, inputs)
        if store is not None:
            store.store(layer, result)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result
