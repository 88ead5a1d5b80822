"""Which weights of a decoder layer get quantized, and their stable addresses.

Every quantizable weight is reached through the model adapter and exposed as a stack
[B, out, in] (B = number of experts, 1 for a plain linear) with a writer that puts new
values back in place. The address (`layers.{i}.{module}`) names the weight in checkpoints
and reports; `module` is the linear's path inside the layer as the model itself names it,
or `router` / `experts.{proj}` for the parts the adapter abstracts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from moequant.models import PROJECTIONS, DecoderLayer, DenseMLP, ExpertBank, ModelAdapter, MoEBlock


@dataclass
class Target:
    """One quantizable weight stack; `views` are the per-member tensors aliasing model storage."""

    layer: int
    module: str
    read: Callable[[], torch.Tensor]
    write: Callable[[torch.Tensor], None]
    views: Callable[[], list[torch.Tensor]]
    is_experts: bool = False

    @property
    def address(self) -> str:
        return f"layers.{self.layer}.{self.module}"

    @property
    def in_features(self) -> int:
        return self.read().shape[-1]


def linear_target(layer: int, name: str, weight: torch.Tensor) -> Target:
    def write(stacked: torch.Tensor) -> None:
        weight.copy_(stacked[0].to(weight.dtype))

    return Target(layer, name, lambda: weight.unsqueeze(0), write, lambda: [weight])


def expert_target(layer: int, bank: ExpertBank, proj: str) -> Target:
    def write(stacked: torch.Tensor) -> None:
        bank.write(proj, stacked.to(bank.dtype))

    def views() -> list[torch.Tensor]:
        return [bank.weight(proj, e) for e in range(bank.num_experts)]

    return Target(layer, f"experts.{proj}", lambda: bank.weights(proj), write, views, is_experts=True)


@dataclass
class LayerTargets:
    """The quantizable weights of one decoder layer, grouped by the role they play."""

    layer: DecoderLayer
    names: dict[int, str]
    quantize_router: bool

    @classmethod
    def of(cls, layer: DecoderLayer, quantize_router: bool) -> LayerTargets:
        names = {id(linear): name for name, linear in layer.named_linears().items()}
        return cls(layer, names, quantize_router)

    def linear(self, module: nn.Linear) -> Target:
        return linear_target(self.layer.index, self.names[id(module)], module.weight.data)

    def attention(self) -> list[list[Target]]:
        """Token-mixer linears in the order their inputs become final: readers, inner, unknown roles, writers.

        Linears of unknown role (linear attention, Mamba, gates, indexers) are one plain-GPTQ
        stage: each gets its own Hessian from the inputs it receives in the layer's forward.
        """
        attn = self.layer.attention
        groups = [attn.readers, attn.inner, attn.other, attn.writers]
        return [[self.linear(m) for m in group.values()] for group in groups if group]

    def routing(self) -> list[Target]:
        """Router and shared-expert gate: the modules that decide the expert coefficients."""
        mlp = self.layer.mlp
        if not isinstance(mlp, MoEBlock) or not self.quantize_router:
            return []
        targets = [linear_target(self.layer.index, "router", mlp.router.linear_weight.data)]
        if mlp.shared_gate is not None:
            targets.append(self.linear(mlp.shared_gate))
        return targets

    def dense(self, mlp: DenseMLP, projections: tuple[str, ...]) -> list[Target]:
        return [self.linear(mlp.projection(p)) for p in projections]

    def experts(self, projections: tuple[str, ...]) -> list[Target]:
        mlp = self.layer.mlp
        assert isinstance(mlp, MoEBlock)
        return [expert_target(self.layer.index, mlp.experts, p) for p in projections]

    def all(self) -> list[Target]:
        targets = [t for group in self.attention() for t in group] + self.routing()
        mlp = self.layer.mlp
        if isinstance(mlp, MoEBlock):
            targets += self.experts(PROJECTIONS)
            for shared in mlp.shared_experts:
                targets += self.dense(shared, PROJECTIONS)
        else:
            targets += self.dense(mlp, PROJECTIONS)
        return targets


def model_targets(adapter: ModelAdapter, quantize_router: bool = True) -> dict[str, Target]:
    return {t.address: t for layer in adapter.layers for t in LayerTargets.of(layer, quantize_router).all()}
