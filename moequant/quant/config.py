"""What a quantization run is asked to do, validated before any weight is touched.

A request is three typed parts: the grid (`GridSpec`, shared by every algorithm), how the
run streams and where it computes (`RunConfig`, shared as well) and the options that only
the chosen algorithm has (its `Algorithm.options` dataclass). Each part validates itself,
so a bad value is one `UsageError` wherever the request was built; the registry builds
one from flat option values (`registry.configure`), which is what the command line does.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

from moequant.errors import require
from moequant.quant.grid import GridSpec
from moequant.quant.options import check_choices, option

HESSIAN_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class RunConfig:
    """How the calibration data streams through the model and where the layer being quantized computes."""

    batch_size: int = option(16, help="calibration samples per forward")
    expert_chunk: int = option(0, help="experts solved at once; 0 = automatic (about 1 GiB of factors a chunk)")
    device: str = option("auto", help="compute device for the layer being quantized")
    quantize_router: bool = option(
        True,
        help="quantize the router and shared-expert gate (as in the paper)",
        off="--keep-router-fp",
        off_help="keep the router and shared-expert gate in floating point",
    )
    min_tokens: int = option(1, help="experts with fewer routed calibration tokens fall back to RTN")
    hessian_dtype: str = option("float32", help="dtype Hessians accumulate in", choices=HESSIAN_DTYPES)

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size!r}")
        require(self.expert_chunk >= 0, f"expert_chunk must be 0 (automatic) or positive, got {self.expert_chunk!r}")
        require(self.min_tokens >= 0, f"min_tokens must be non-negative, got {self.min_tokens!r}")
        check_choices(self)


SHARED = (GridSpec, RunConfig)
"""The settings every algorithm takes; each algorithm adds its own options dataclass."""

Options = TypeVar("Options")


@dataclass(frozen=True)
class QuantConfig(Generic[Options]):
    """The one object the driver and an algorithm receive: the algorithm's name and its three parts."""

    algo: str
    grid: GridSpec
    run: RunConfig
    options: Options

    def to_dict(self) -> dict[str, Any]:
        """Option name → value, flat: the names `quantization.json` has always recorded, one per option."""
        payload: dict[str, Any] = {"algo": self.algo}
        for part in (self.grid, self.run, self.options):
            for f in fields(part):
                value = getattr(part, f.name)
                payload[f.name] = list(value) if isinstance(value, tuple) else value
        return payload
