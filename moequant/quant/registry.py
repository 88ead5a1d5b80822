"""Algorithm name → implementation, so new algorithms plug in without touching the CLI.

Every module of `moequant.quant` is imported on first lookup, and each one that declares
`ALGORITHMS` (a tuple of `Algorithm`) contributes them. Adding `awq.py` beside the others is
therefore all it takes to make `--algo awq` available.
"""

from __future__ import annotations

import importlib
import pkgutil

from moequant.errors import UsageError
from moequant.quant.algorithm import Algorithm

_ALGORITHMS: dict[str, Algorithm] = {}


def _load_all() -> dict[str, Algorithm]:
    if _ALGORITHMS:
        return _ALGORITHMS
    import moequant.quant as package

    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for algorithm in getattr(module, "ALGORITHMS", ()):
            if algorithm.name in _ALGORITHMS:
                raise ValueError(f"algorithm {algorithm.name!r} is declared twice")
            _ALGORITHMS[algorithm.name] = algorithm
    return _ALGORITHMS


def names() -> list[str]:
    return sorted(_load_all())


def get(name: str) -> Algorithm:
    algorithms = _load_all()
    if name not in algorithms:
        raise UsageError(f"unknown algorithm {name!r}; available: {', '.join(sorted(algorithms))}")
    return algorithms[name]
