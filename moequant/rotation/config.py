"""What a rotation run may be asked to do, validated before any weight is touched."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from moequant.errors import UsageError
from moequant.rotation.transform import BACKENDS


@dataclass(frozen=True)
class RotationConfig:
    """seed draws the ±1 signs of Q; online_hadamard adds the runtime transform before down projections."""

    seed: int = 0
    online_hadamard: bool = False
    backend: str = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UsageError(f"rotation seed must be a non-negative integer, got {self.seed!r}")
        if not isinstance(self.online_hadamard, bool):
            raise UsageError(f"online_hadamard must be true or false, got {self.online_hadamard!r}")
        if self.backend not in BACKENDS:
            raise UsageError(f"unknown Hadamard backend {self.backend!r}; allowed: {', '.join(BACKENDS)}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)
