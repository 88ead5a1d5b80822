"""What a quantization run is asked to do, validated before any weight is touched.

One dataclass covers every algorithm so a checkpoint's `quantization.json` can record the
whole request; algorithms ignore the fields that do not concern them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from moequant.errors import UsageError, require
from moequant.models import PROJECTIONS
from moequant.quant.grid import SCALE_DTYPES, GridSpec

AGQ_WEIGHTS = ("c", "c2")
HESSIAN_DTYPES = ("float32", "float64")


@dataclass
class QuantConfig:
    algo: str = "rtn"
    wbits: int = 4
    groupsize: int = -1
    sym: bool = True
    clip: bool = True
    clip_norm: float = 2.4
    clip_grid: int = 100
    clip_maxshrink: float = 0.8
    scale_dtype: str = "float32"
    damp: float = 0.01
    blocksize: int = 128
    act_order: bool = False
    agq_weight: str = "c"
    agq_projections: tuple[str, ...] = PROJECTIONS
    quantize_router: bool = True
    min_tokens: int = 1
    all_experts: bool = False
    """GPTQ/AGQ: every calibration token enters every expert's Hessian (the peers' remedy for
    starved experts), while each layer's output still comes from the routed experts only."""
    hessian_dtype: str = "float32"
    batch_size: int = 16
    expert_chunk: int = 0
    device: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.agq_projections = tuple(self.agq_projections)
        require(
            isinstance(self.wbits, int) and 2 <= self.wbits <= 8,
            f"wbits must be an integer from 2 to 8, got {self.wbits!r}",
        )
        require(
            self.groupsize == -1 or (isinstance(self.groupsize, int) and self.groupsize > 0),
            f"groupsize must be -1 (per output channel) or a positive integer, got {self.groupsize!r}",
        )
        require(self.clip_norm > 0, f"clip_norm must be positive, got {self.clip_norm!r}")
        require(self.clip_grid >= 1, f"clip_grid must be at least 1, got {self.clip_grid!r}")
        require(0 <= self.clip_maxshrink < 1, f"clip_maxshrink must lie in [0, 1), got {self.clip_maxshrink!r}")
        require(
            self.scale_dtype in SCALE_DTYPES, f"scale_dtype must be one of {SCALE_DTYPES}, got {self.scale_dtype!r}"
        )
        require(self.damp >= 0, f"damp must be non-negative (a fraction of mean(diag H)), got {self.damp!r}")
        require(self.blocksize >= 1, f"blocksize must be at least 1, got {self.blocksize!r}")
        require(self.agq_weight in AGQ_WEIGHTS, f"agq_weight must be one of {AGQ_WEIGHTS}, got {self.agq_weight!r}")
        unknown = [p for p in self.agq_projections if p not in PROJECTIONS]
        require(not unknown, f"agq_projections {unknown} not allowed; choose from {PROJECTIONS}")
        require(isinstance(self.all_experts, bool), f"all_experts must be true or false, got {self.all_experts!r}")
        require(self.min_tokens >= 0, f"min_tokens must be non-negative, got {self.min_tokens!r}")
        require(
            self.hessian_dtype in HESSIAN_DTYPES,
            f"hessian_dtype must be one of {HESSIAN_DTYPES}, got {self.hessian_dtype!r}",
        )
        require(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size!r}")
        require(self.expert_chunk >= 0, f"expert_chunk must be 0 (automatic) or positive, got {self.expert_chunk!r}")

    def grid(self) -> GridSpec:
        return GridSpec(
            self.wbits,
            self.sym,
            self.groupsize,
            self.clip,
            self.clip_norm,
            self.clip_grid,
            self.clip_maxshrink,
            self.scale_dtype,
        )

    def check_in_features(self, in_features: int, where: str) -> None:
        """Groups must tile a row exactly so codes and scales stay rectangular."""
        if self.groupsize != -1 and in_features % self.groupsize:
            raise UsageError(
                f"groupsize {self.groupsize} does not divide the {in_features} input features of {where}"
            )

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["agq_projections"] = list(self.agq_projections)
        return payload
