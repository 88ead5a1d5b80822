"""What differs between MoE families: module names and how a router's output reads.

Every family-specific module name lives in this file. Layouts (fused 3-D experts or one
module per expert) are told apart by structure, so one family entry covers both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from moequant.models.base import (
    Attention,
    DecoderLayer,
    DenseMLP,
    ExpertBank,
    FusedExperts,
    ModelAdapter,
    ModuleListExperts,
    MoEBlock,
    Router,
)

_PROJECTION_NAMES = {"gate": ("gate_proj", "w1"), "up": ("up_proj", "w3"), "down": ("down_proj", "w2")}
_ATTENTION_READERS = ("q_proj", "k_proj", "v_proj", "q_a_proj", "kv_a_proj_with_mqa")
_ATTENTION_WRITERS = ("o_proj",)
_ATTENTION_INNER = ("q_b_proj", "kv_b_proj")
_MLP_NAMES = ("mlp", "block_sparse_moe")


def _child_linear(module: nn.Module, names: tuple[str, ...]) -> nn.Linear | None:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Linear):
            return child
    return None


def dense_mlp(module: nn.Module) -> DenseMLP:
    parts = {proj: _child_linear(module, names) for proj, names in _PROJECTION_NAMES.items()}
    missing = [proj for proj, linear in parts.items() if linear is None]
    if missing or not hasattr(module, "act_fn"):
        raise NotImplementedError(f"{type(module).__name__} is not a gated FFN (missing {missing or ['act_fn']})")
    return DenseMLP(parts["gate"], parts["up"], parts["down"], module.act_fn)


def _parse_topk_router(output: object) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers 5 routers return (logits, top-k weights, top-k ids)."""
    _, weights, ids = output  # type: ignore[misc]
    return ids, weights


def _parse_remote_deepseek_gate(output: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Remote-code DeepSeek-MoE `MoEGate` returns (top-k ids, top-k weights, aux loss)."""
    ids, weights = output[0], output[1]  # type: ignore[index]
    return ids, weights


def _mixtral_linear_gate(top_k: int) -> Callable[[object], tuple[torch.Tensor, torch.Tensor]]:
    """Older Mixtral: the gate is a plain Linear; the block applies softmax → top-k → renorm."""

    def parse(logits: object) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.softmax(logits.float(), dim=-1)  # type: ignore[union-attr]
        weights, ids = torch.topk(probs, top_k, dim=-1)
        return ids, weights / weights.sum(dim=-1, keepdim=True)

    return parse


def _value_source(attn: nn.Module, writer: nn.Linear | None) -> tuple[nn.Linear | None, torch.Tensor | None]:
    """The linear producing V and, per writer input channel, its row (see `Attention.value_rows`).

    Grouped-query attention repeats kv head g for query heads g·n_rep … g·n_rep + n_rep − 1;
    MLA's `kv_b_proj` holds, per head, the no-rope key rows followed by the value rows.
    """
    if writer is None:
        return None, None
    v_proj, kv_b = getattr(attn, "v_proj", None), getattr(attn, "kv_b_proj", None)
    if isinstance(v_proj, nn.Linear) and isinstance(getattr(attn, "head_dim", None), int):
        head_dim, n_rep = attn.head_dim, int(getattr(attn, "num_key_value_groups", 1))
        heads = writer.in_features // head_dim
        kv_head = torch.arange(heads) // n_rep
        rows = (kv_head[:, None] * head_dim + torch.arange(head_dim)).reshape(-1)
        value = v_proj
    elif isinstance(kv_b, nn.Linear) and all(hasattr(attn, a) for a in ("num_heads", "qk_nope_head_dim", "v_head_dim")):
        nope, v_dim, heads = attn.qk_nope_head_dim, attn.v_head_dim, attn.num_heads
        rows = (torch.arange(heads)[:, None] * (nope + v_dim) + nope + torch.arange(v_dim)).reshape(-1)
        value = kv_b
    else:
        return None, None
    if rows.numel() != writer.in_features or int(rows.max()) >= value.out_features:
        return None, None
    return value, rows


def _topk_router_logits(output: object) -> torch.Tensor:
    return output[0]  # type: ignore[index]


def _linear_gate_logits(output: object) -> torch.Tensor:
    return output  # type: ignore[return-value]


def _no_logits(family: str) -> Callable[[object], torch.Tensor]:
    def missing(_output: object) -> torch.Tensor:
        raise NotImplementedError(f"{family} routers do not return their raw scores")

    return missing


@dataclass(frozen=True)
class Family:
    """Per-family facts the generic walker cannot infer from structure alone."""

    name: str
    shared_expert_names: tuple[str, ...] = ()
    shared_gate_name: str | None = None
    remote_gate: bool = False

    def router(self, mlp: nn.Module, config: object) -> Router:
        gate = mlp.gate
        if isinstance(gate, nn.Linear):
            top_k = int(getattr(mlp, "top_k", getattr(config, "num_experts_per_tok", 2)))
            gate.top_k = top_k
            return Router(gate, gate.weight, _mixtral_linear_gate(top_k), _linear_gate_logits)
        if self.remote_gate:
            return Router(gate, gate.weight, _parse_remote_deepseek_gate, _no_logits(self.name))
        return Router(gate, gate.weight, _parse_topk_router, _topk_router_logits, getattr(gate, "e_score_correction_bias", None))

    def experts(self, mlp: nn.Module) -> ExpertBank:
        experts = mlp.experts
        if isinstance(experts, nn.ModuleList):
            return ModuleListExperts([dense_mlp(expert) for expert in experts])
        if hasattr(experts, "gate_up_proj") and hasattr(experts, "down_proj"):
            return FusedExperts(experts)
        raise NotImplementedError(f"unrecognised expert layout {type(experts).__name__}")

    def moe_block(self, mlp: nn.Module, config: object) -> MoEBlock:
        shared = [dense_mlp(getattr(mlp, n)) for n in self.shared_expert_names if getattr(mlp, n, None) is not None]
        shared_gate = getattr(mlp, self.shared_gate_name, None) if self.shared_gate_name else None
        return MoEBlock(mlp, self.router(mlp, config), self.experts(mlp), shared, shared_gate)

    def attention(self, attn: nn.Module) -> Attention:
        def pick(names: tuple[str, ...]) -> dict[str, nn.Linear]:
            return {n: getattr(attn, n) for n in names if isinstance(getattr(attn, n, None), nn.Linear)}

        writers = pick(_ATTENTION_WRITERS)
        value, rows = _value_source(attn, writers.get("o_proj"))
        return Attention(attn, pick(_ATTENTION_READERS), writers, pick(_ATTENTION_INNER), value, rows)

    def layer(self, index: int, module: nn.Module, config: object) -> DecoderLayer:
        mlp_name = next(n for n in _MLP_NAMES if hasattr(module, n))
        mlp = getattr(module, mlp_name)
        is_moe = hasattr(mlp, "experts") and hasattr(mlp, "gate")
        return DecoderLayer(
            index=index,
            module=module,
            input_norm=module.input_layernorm,
            post_attention_norm=module.post_attention_layernorm,
            attention=self.attention(module.self_attn),
            mlp=self.moe_block(mlp, config) if is_moe else dense_mlp(mlp),
            mlp_name=mlp_name,
        )

    def adapt(self, model: nn.Module) -> ModelAdapter:
        inner = model.model
        layers = [self.layer(i, layer, model.config) for i, layer in enumerate(inner.layers)]
        return ModelAdapter(self.name, model, layers, inner.embed_tokens, inner.norm, model.lm_head)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("mixtral"),
        Family("qwen2_moe", shared_expert_names=("shared_expert",), shared_gate_name="shared_expert_gate"),
        Family("qwen3_moe"),
        Family("deepseek_v2", shared_expert_names=("shared_experts",)),
        Family("deepseek_v3", shared_expert_names=("shared_experts",)),
        Family("olmoe"),
        Family("deepseek", shared_expert_names=("shared_experts",), remote_gate=True),
    )
}
