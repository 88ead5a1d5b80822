"""Family-neutral views of a MoE decoder: what every other room of moequant talks to.

The views hold references into the live model, never copies: writing through a view edits
the model in place, so rotation and quantization need no second copy of the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from moequant.errors import UsageError

PROJECTIONS = ("gate", "up", "down")

RouteParser = Callable[[object], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class DenseMLP:
    """A gated FFN (dense layer, shared expert, or one per-expert module)."""

    gate: nn.Linear
    up: nn.Linear
    down: nn.Linear
    act_fn: Callable[[torch.Tensor], torch.Tensor]

    def projection(self, proj: str) -> nn.Linear:
        return {"gate": self.gate, "up": self.up, "down": self.down}[proj]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.act_fn(self.gate(x)) * self.up(x))


class ExpertBank:
    """The routed experts of one MoE block as per-expert [out, in] weight matrices."""

    num_experts: int
    hidden_size: int
    intermediate_size: int
    act_fn: Callable[[torch.Tensor], torch.Tensor]
    layout: str

    def weight(self, proj: str, expert: int) -> torch.Tensor:
        """A view of one expert's weight; in-place writes land in the model."""
        raise NotImplementedError

    def weights(self, proj: str) -> torch.Tensor:
        """All experts' weights of one projection as [E, out, in] (a view where the layout allows)."""
        raise NotImplementedError

    def bias(self, proj: str) -> torch.Tensor | None:
        """All experts' biases of one projection as [E, out] (a view), None for bias-free experts."""
        return None

    def write(self, proj: str, stacked: torch.Tensor) -> None:
        """Write [E, out, in] weights of one projection back into the model."""
        for expert in range(self.num_experts):
            self.weight(proj, expert).copy_(stacked[expert])

    def parameters(self) -> Iterator[nn.Parameter]:
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _linear(self, proj: str, expert: int, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias(proj)
        return torch.nn.functional.linear(x, self.weight(proj, expert), None if bias is None else bias[expert])

    def intermediate(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        """The input of one expert's down projection for the tokens `x` [T, H]: act(x·Wg)·(x·Wu)."""
        return self.act_fn(self._linear("gate", expert, x)) * self._linear("up", expert, x)

    def expert_forward(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        """One expert's unweighted output for the tokens `x` [T, H]."""
        return self._linear("down", expert, self.intermediate(expert, x))

    def routed_forward(self, x: torch.Tensor, ids: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        """Σ over each token's routed experts of coefficient × expert output, for `x` [T, H] and ids [T, k]."""
        out = torch.zeros_like(x)
        for expert in range(self.num_experts):
            token, slot = torch.where(ids == expert)
            if token.numel():
                y = self.expert_forward(expert, x[token]) * coeffs[token, slot, None]
                out.index_add_(0, token, y.to(out.dtype))
        return out


class FusedExperts(ExpertBank):
    """The transformers 5 experts interface (`@use_experts_implementation`), in every storage layout.

    `gate_up_proj` is [E, 2I, H] with gate rows first by default; the module's own flags say
    when it is transposed ([E, H, 2I], down [E, I, H]), interleaved (gate and up alternate,
    gpt-oss) or biased. The activation is the module's own `_apply_gate` on the fused
    gate/up output, so clamped or custom GLUs (gpt-oss, DeepSeek-V4) are computed exactly as
    the model computes them.
    """

    layout = "fused"

    def __init__(self, module: nn.Module) -> None:
        if not getattr(module, "has_gate", True):
            raise NotImplementedError("experts without a gate projection (up and down only)")
        if getattr(module, "has_post_expert_norm", False):
            raise NotImplementedError("experts with a norm after each expert")
        self.module = module
        self.transposed = bool(getattr(module, "is_transposed", False))
        self.interleaved = not getattr(module, "is_concatenated", True)
        self.has_bias = bool(getattr(module, "has_bias", False))
        shape = module.gate_up_proj.shape
        self.num_experts = shape[0]
        self.hidden_size, two_i = (shape[1], shape[2]) if self.transposed else (shape[2], shape[1])
        self.intermediate_size = two_i // 2
        self.act_fn = getattr(module, "act_fn", None)
        if self.interleaved:
            self.layout = "fused-interleaved"
        elif self.transposed:
            self.layout = "fused-transposed"

    def _gate_up_rows(self, proj: str) -> slice:
        size = self.intermediate_size
        if self.interleaved:
            return slice(0, None, 2) if proj == "gate" else slice(1, None, 2)
        return slice(0, size) if proj == "gate" else slice(size, 2 * size)

    def weights(self, proj: str) -> torch.Tensor:
        if proj == "down":
            down = self.module.down_proj.data
            return down.transpose(1, 2) if self.transposed else down
        if proj not in ("gate", "up"):
            raise KeyError(proj)
        rows = self._gate_up_rows(proj)
        fused = self.module.gate_up_proj.data
        return fused[:, :, rows].transpose(1, 2) if self.transposed else fused[:, rows]

    def bias(self, proj: str) -> torch.Tensor | None:
        if not self.has_bias:
            return None
        if proj == "down":
            return self.module.down_proj_bias.data
        return self.module.gate_up_proj_bias.data[:, self._gate_up_rows(proj)]

    def weight(self, proj: str, expert: int) -> torch.Tensor:
        return self.weights(proj)[expert]

    def write(self, proj: str, stacked: torch.Tensor) -> None:
        self.weights(proj).copy_(stacked)

    def intermediate(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        fused = self.module.gate_up_proj[expert]
        gate_up = x @ fused if self.transposed else torch.nn.functional.linear(x, fused)
        if self.has_bias:
            gate_up = gate_up + self.module.gate_up_proj_bias[expert]
        return self.module._apply_gate(gate_up)

    def parameters(self) -> Iterator[nn.Parameter]:
        return iter((self.module.gate_up_proj, self.module.down_proj))


class ModuleListExperts(ExpertBank):
    """Per-expert FFN modules (older transformers, remote-code DeepSeek-MoE)."""

    layout = "modulelist"

    def __init__(self, experts: list[DenseMLP]) -> None:
        self.experts = experts
        self.num_experts = len(experts)
        self.hidden_size = experts[0].gate.in_features
        self.intermediate_size = experts[0].gate.out_features
        self.act_fn = experts[0].act_fn

    def weight(self, proj: str, expert: int) -> torch.Tensor:
        return self.experts[expert].projection(proj).weight.data

    def weights(self, proj: str) -> torch.Tensor:
        return torch.stack([self.weight(proj, e) for e in range(self.num_experts)])

    def parameters(self) -> Iterator[nn.Parameter]:
        for mlp in self.experts:
            yield from (mlp.gate.weight, mlp.up.weight, mlp.down.weight)


class _Routed(Exception):
    """Raised from the experts pre-hook once the block's own forward has produced its routing."""


def routing_arguments(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(top-k ids [T, k], coefficients [T, k]) from a call `experts(hidden, top_k_index, top_k_weights)`."""
    _, ids, coeffs = (*args, *kwargs.values())[:3]
    if ids.is_floating_point() and not coeffs.is_floating_point():
        ids, coeffs = coeffs, ids
    k = ids.shape[-1]
    return ids.reshape(-1, k), coeffs.reshape(-1, k)


@contextmanager
def forwards_replaced(replacements: dict[nn.Module, Callable[..., Any]]) -> Iterator[None]:
    """Run with each module's forward replaced, then restore what it had: its class's forward,
    or an instance-level one (an offloading hook's)."""
    own = {module: module.__dict__.get("forward") for module in replacements}
    for module, forward in replacements.items():
        module.forward = forward
    try:
        yield
    finally:
        for module, forward in own.items():
            if forward is None:
                del module.forward
            else:
                module.forward = forward


def _zeros_like_input(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
    return torch.zeros_like(x)


@dataclass
class Router:
    """The router of one MoE block and the exact routing its block's forward applies.

    For the standard experts interface the routing is read where the block hands it to the
    experts, by running the block's own forward up to that call: whatever the scoring
    (softmax, sigmoid with bias correction, group-limited top-k, renormalised or not), the
    ids and coefficients are the ones the model uses. Per-expert module lists (older and
    remote-code models) call each expert separately, so there `parse` reads the router's output.
    """

    module: nn.Module
    linear_weight: nn.Parameter
    logits: Callable[[object], torch.Tensor]
    """The raw scores [T, E] inside a router call's output, with their gradient: a balance loss
    built on these trains exactly as the family's own auxiliary loss back-propagates."""
    block: nn.Module
    experts_module: nn.Module | None = None
    parse: RouteParser | None = None
    bypass: tuple[nn.Module, ...] = ()
    """Shared experts of the block: their output joins the routed experts' output and never
    the routing, so while the block runs up to its experts call they return zeros instead
    of computing (Qwen-MoE families run a shared expert as large as a dense FFN first)."""

    def route(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(top-k expert ids [T, k], coefficients [T, k]) for tokens `hidden` [..., H]."""
        ids, coeffs, _ = self._route(hidden, scores=False)
        return ids, coeffs

    def route_with_scores(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`route` plus the router's raw scores [T, E] from the same call (`logits`)."""
        ids, coeffs, scores = self._route(hidden, scores=True)
        assert scores is not None
        return ids, coeffs, scores

    def _route(self, hidden: torch.Tensor, scores: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x = hidden.reshape(-1, hidden.shape[-1])
        if self.parse is not None:
            output = self.module(x)
            ids, coeffs = self.parse(output)
            return ids, coeffs, self.logits(output).reshape(x.shape[0], -1) if scores else None
        found: list[tuple[torch.Tensor, torch.Tensor]] = []
        raw: list[torch.Tensor] = []

        def on_experts(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            found.append(routing_arguments(args, kwargs))
            raise _Routed

        handles = [self.experts_module.register_forward_pre_hook(on_experts, with_kwargs=True)]
        if scores:
            handles.append(self.module.register_forward_hook(lambda _m, _i, output: raw.append(self.logits(output))))
        try:
            with forwards_replaced(dict.fromkeys(self.bypass, _zeros_like_input)):
                self.block(x[None])
        except _Routed:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if not found:
            raise RuntimeError(f"{type(self.block).__name__} never called its experts")
        ids, coeffs = found[0]
        return ids, coeffs, raw[0].reshape(x.shape[0], -1) if scores else None


@dataclass
class MoEBlock:
    module: nn.Module
    router: Router
    experts: ExpertBank
    shared_experts: list[DenseMLP] = field(default_factory=list)
    shared_gate: nn.Linear | None = None
    top_k: int = -1

    def shared_coefficient(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token scale of the shared expert output [T, 1] (1 without a shared gate)."""
        if self.shared_gate is None:
            return torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
        return torch.sigmoid(self.shared_gate(x))


@dataclass
class Attention:
    """Attention linears grouped by how they touch the residual stream."""

    module: nn.Module
    readers: dict[str, nn.Linear]
    writers: dict[str, nn.Linear]
    inner: dict[str, nn.Linear] = field(default_factory=dict)
    value: nn.Linear | None = None
    value_rows: torch.Tensor | None = None
    """For each input channel of the writer (o_proj), the row of `value` that produces it.

    Attention mixes tokens but never channels of V, so scaling a row of `value` scales
    exactly the writer inputs it feeds (all heads of its group under GQA); AWQ folds o_proj
    input scales this way. None where the family's layout is not known to be linear in V.
    """
    other: dict[str, nn.Linear] = field(default_factory=dict)
    """Linears of the token mixer whose role the adapter does not know (linear attention, Mamba,
    attention output gates, sparse-attention indexers): quantized with plain GPTQ after the
    readers, never rotated or folded into (they make the layer a fold blocker)."""


@dataclass
class DecoderLayer:
    index: int
    module: nn.Module
    input_norm: nn.Module | None
    post_attention_norm: nn.Module | None
    attention: Attention
    mlp: MoEBlock | DenseMLP
    mlp_name: str
    fold_blockers: list[str] = field(default_factory=list)
    """What breaks 'norm → its readers, writers → the residual' in this layer (extra norms or
    residual branches): folding into the norms (rotation, AWQ) would not be exact here."""

    @property
    def is_moe(self) -> bool:
        return isinstance(self.mlp, MoEBlock)

    def named_linears(self) -> dict[str, nn.Linear]:
        """Every nn.Linear of the layer by its name relative to the layer module."""
        prefix = {id(m): n for n, m in self.module.named_modules()}
        return {prefix[id(m)]: m for m in self.module.modules() if isinstance(m, nn.Linear)}


@dataclass
class ModelAdapter:
    family: str
    model: nn.Module
    layers: list[DecoderLayer]
    embed_tokens: nn.Embedding
    final_norm: nn.Module
    lm_head: nn.Linear
    decoder_layers: nn.ModuleList

    def check_foldable(self, stage: str) -> None:
        """One-line refusal of `stage` (rotation, AWQ) when a layer's norms cannot absorb a fold exactly."""
        for layer in self.layers:
            if layer.fold_blockers:
                raise UsageError(
                    f"{stage} folds into each layer's two norms, but {self.family} layer {layer.index} has "
                    f"{'; '.join(layer.fold_blockers)}; it is refused rather than applied approximately"
                )

    def layer_prefixes(self) -> dict[int, str]:
        """Layer index → the decoder layer's module name (the prefix of its tensors' names)."""
        names = {id(module): name for name, module in self.model.named_modules()}
        return {layer.index: names[id(layer.module)] for layer in self.layers}

    @property
    def moe_layers(self) -> list[DecoderLayer]:
        return [layer for layer in self.layers if layer.is_moe]

    @property
    def num_experts(self) -> int:
        return self.moe_layers[0].mlp.experts.num_experts

    @property
    def top_k(self) -> int:
        return self.moe_layers[0].mlp.top_k
