"""Family-neutral views of a MoE decoder: what every other room of moequant talks to.

The views hold references into the live model, never copies: writing through a view edits
the model in place, so rotation and quantization need no second copy of the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

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

    def intermediate(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        """The input of one expert's down projection for the tokens `x` [T, H]: act(x·Wg)·(x·Wu)."""
        gate = x @ self.weight("gate", expert).t()
        up = x @ self.weight("up", expert).t()
        return self.act_fn(gate) * up

    def expert_forward(self, expert: int, x: torch.Tensor) -> torch.Tensor:
        """One expert's unweighted output for the tokens `x` [T, H]."""
        return self.intermediate(expert, x) @ self.weight("down", expert).t()


class FusedExperts(ExpertBank):
    """transformers 5 layout: `gate_up_proj` [E, 2I, H] (gate rows first) and `down_proj` [E, H, I]."""

    layout = "fused"

    def __init__(self, module: nn.Module) -> None:
        if getattr(module, "is_transposed", False) or getattr(module, "has_bias", False):
            raise NotImplementedError("transposed or biased fused experts are not supported")
        self.module = module
        self.num_experts, two_i, self.hidden_size = module.gate_up_proj.shape
        self.intermediate_size = two_i // 2
        self.act_fn = module.act_fn

    def weights(self, proj: str) -> torch.Tensor:
        size = self.intermediate_size
        if proj == "gate":
            return self.module.gate_up_proj.data[:, :size]
        if proj == "up":
            return self.module.gate_up_proj.data[:, size:]
        if proj == "down":
            return self.module.down_proj.data
        raise KeyError(proj)

    def weight(self, proj: str, expert: int) -> torch.Tensor:
        return self.weights(proj)[expert]

    def write(self, proj: str, stacked: torch.Tensor) -> None:
        self.weights(proj).copy_(stacked)

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


@dataclass
class Router:
    """The router of one MoE block and the exact routing its block's forward applies."""

    module: nn.Module
    linear_weight: nn.Parameter
    parse: RouteParser
    logits: Callable[[object], torch.Tensor]
    """The raw scores [T, E] inside a router call's output, with their gradient: a balance loss
    built on these trains exactly as the family's own auxiliary loss back-propagates."""
    score_bias: torch.Tensor | None = None

    def route(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(top-k expert ids [T, k], coefficients [T, k]) for tokens `hidden` [..., H]."""
        return self.parse(self.module(hidden.reshape(-1, hidden.shape[-1])))


@dataclass
class MoEBlock:
    module: nn.Module
    router: Router
    experts: ExpertBank
    shared_experts: list[DenseMLP] = field(default_factory=list)
    shared_gate: nn.Linear | None = None

    @property
    def top_k(self) -> int:
        return int(self.router.module.top_k) if hasattr(self.router.module, "top_k") else -1

    def shared_coefficient(self, x: torch.Tensor) -> torch.Tensor:
        """Per-token scale of the shared expert output [T, 1] (1 without a shared gate)."""
        if self.shared_gate is None:
            return torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
        return torch.sigmoid(self.shared_gate(x))

    def forward_from_parts(self, hidden: torch.Tensor) -> torch.Tensor:
        """Recompute the block's output from routing, expert views and shared experts."""
        shape = hidden.shape
        x = hidden.reshape(-1, shape[-1])
        ids, coeffs = self.router.route(x)
        out = torch.zeros_like(x)
        for expert in range(self.experts.num_experts):
            token_idx, slot = torch.where(ids == expert)
            if token_idx.numel() == 0:
                continue
            y = self.experts.expert_forward(expert, x[token_idx])
            out.index_add_(0, token_idx, (y * coeffs[token_idx, slot, None]).to(out.dtype))
        if self.shared_experts:
            shared = sum(mlp(x) for mlp in self.shared_experts)
            out = out + self.shared_coefficient(x) * shared
        return out.reshape(shape)


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


@dataclass
class DecoderLayer:
    index: int
    module: nn.Module
    input_norm: nn.Module
    post_attention_norm: nn.Module
    attention: Attention
    mlp: MoEBlock | DenseMLP
    mlp_name: str

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

    @property
    def moe_layers(self) -> list[DecoderLayer]:
        return [layer for layer in self.layers if layer.is_moe]

    @property
    def num_experts(self) -> int:
        return self.moe_layers[0].mlp.experts.num_experts

    @property
    def top_k(self) -> int:
        return self.moe_layers[0].mlp.top_k

    @property
    def decoder_layers(self) -> nn.ModuleList:
        return self.model.model.layers
