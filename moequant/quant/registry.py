"""Algorithm name → implementation, so new algorithms plug in without touching the CLI.

Every module of `moequant.quant` is imported on first lookup; a module registers its
algorithms at import time with `register(Algorithm(...))`. Adding `awq.py` beside the
others is therefore all it takes to make `--algo awq` available.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from moequant.errors import UsageError

if TYPE_CHECKING:
    from moequant.quant.report import QuantResult

QuantizeFn = Callable[..., "QuantResult"]
"""(model, calib, config) → result; calibrated algorithms also take `journal=` (a `LayerJournal`) to resume."""


@dataclass(frozen=True)
class Algorithm:
    name: str
    quantize: QuantizeFn
    needs_calibration: bool
    description: str = ""


_ALGORITHMS: dict[str, Algorithm] = {}
_loaded = False


def register(algorithm: Algorithm) -> Algorithm:
    existing = _ALGORITHMS.get(algorithm.name)
    if existing is not None and existing.quantize is not algorithm.quantize:
        raise ValueError(f"algorithm {algorithm.name!r} is already registered")
    _ALGORITHMS[algorithm.name] = algorithm
    return algorithm


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import moequant.quant as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")


def names() -> list[str]:
    _load_all()
    return sorted(_ALGORITHMS)


def get(name: str) -> Algorithm:
    _load_all()
    if name not in _ALGORITHMS:
        raise UsageError(f"unknown algorithm {name!r}; available: {', '.join(sorted(_ALGORITHMS))}")
    return _ALGORITHMS[name]
