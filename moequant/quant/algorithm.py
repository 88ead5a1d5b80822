"""What an algorithm module declares about itself, so the registry can find it without the module importing the registry.

The dependency runs one way: the registry scans `moequant.quant` and reads each module's
`ALGORITHMS` tuple; algorithm modules import only this small record type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from moequant.quant.report import QuantResult

QuantizeFn = Callable[..., "QuantResult"]
"""(model, calib, config) → result; calibrated algorithms also take `journal=` (a `LayerJournal`) to resume."""


@dataclass(frozen=True)
class Algorithm:
    """`options` is the dataclass of the algorithm's own options (fields declared with
    `quant.options.option`); the registry builds it, and the command line its flags, from it."""

    name: str
    options: type
    quantize: QuantizeFn
    needs_calibration: bool
    description: str = ""
