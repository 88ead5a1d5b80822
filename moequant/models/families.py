"""What structure cannot show: how a router's output reads when the experts are called one by one.

The standard experts interface receives the routing as call arguments, so its router needs
nothing here (see `Router`). Per-expert module lists call each expert separately; their
routing can only be read from the router's own output, whose form is a family fact.
"""

from __future__ import annotations

import torch
from torch import nn

from moequant.models.base import ExpertBank, ModuleListExperts, Router

REMOTE_CODE_FAMILIES = ("deepseek",)
"""Model types that exist only as remote code on the Hub (DeepSeek-MoE's `MoEGate` returns
(top-k ids, top-k weights, aux loss) and calls its experts one by one)."""


class UnreadableRouter(Exception):
    """A per-expert module list whose router output form is not known."""


def _parse_ids_weights_aux(output: object) -> tuple[torch.Tensor, torch.Tensor]:
    ids, weights = output[0], output[1]  # type: ignore[index]
    return ids, weights


def _raw_scores(output: object) -> torch.Tensor:
    """transformers 5 routers return (scores, top-k weights, top-k ids); plain linear gates the scores."""
    return output[0] if isinstance(output, tuple) else output  # type: ignore[return-value]


def _no_scores(_output: object) -> torch.Tensor:
    raise NotImplementedError("this router does not return its raw scores")


def router_for(module: nn.Module, weight: nn.Parameter, bank: ExpertBank, block: nn.Module) -> Router:
    if not isinstance(bank, ModuleListExperts):
        return Router(module, weight, _raw_scores, block, experts_module=block.experts)
    if type(module).__name__ == "MoEGate":
        return Router(module, weight, _no_scores, block, parse=_parse_ids_weights_aux)
    raise UnreadableRouter(
        f"{type(block).__name__} calls per-expert modules with a {type(module).__name__} router whose output form is unknown"
    )
