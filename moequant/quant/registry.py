"""Algorithm name → implementation and options, so new algorithms plug in without touching the CLI.

Every module of `moequant.quant` is imported on first lookup, and each one that declares
`ALGORITHMS` (a tuple of `Algorithm`) contributes them. Adding `awq.py` beside the others is
therefore all it takes to make `--algo awq` and its flags available.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any

from moequant.errors import UsageError
from moequant.quant.algorithm import Algorithm
from moequant.quant.config import SHARED, QuantConfig
from moequant.quant.options import flag, own_fields

_ALGORITHMS: dict[str, Algorithm] = {}


def _check_one_field_per_option(algorithms: dict[str, Algorithm]) -> None:
    """An option name means one field: to_dict, the flags and the workflow's keys rely on it."""
    declared: dict[str, dataclasses.Field] = {}
    for cls in (*SHARED, *(a.options for a in algorithms.values())):
        for f in dataclasses.fields(cls):
            if declared.setdefault(f.name, f) is not f:
                raise ValueError(f"option {f.name!r} is declared by two dataclasses")


def _load_all() -> dict[str, Algorithm]:
    if _ALGORITHMS:
        return _ALGORITHMS
    import moequant.quant as package

    found: dict[str, Algorithm] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for algorithm in getattr(module, "ALGORITHMS", ()):
            if algorithm.name in found:
                raise ValueError(f"algorithm {algorithm.name!r} is declared twice")
            found[algorithm.name] = algorithm
    _check_one_field_per_option(found)
    _ALGORITHMS.update(found)
    return _ALGORITHMS


def names() -> list[str]:
    return sorted(_load_all())


def get(name: str) -> Algorithm:
    algorithms = _load_all()
    if name not in algorithms:
        raise UsageError(f"unknown algorithm {name!r}; available: {', '.join(sorted(algorithms))}")
    return algorithms[name]


def takers(option: str) -> list[str]:
    """The algorithms that take `option` as one of their own (not a shared setting)."""
    return [name for name in names() if option in {f.name for f in dataclasses.fields(get(name).options)}]


def option_groups() -> list[tuple[str, type]]:
    """Each options dataclass with the title its flags are listed under: shared settings first, a base before its subclasses."""
    groups: list[tuple[str, type]] = [("grid", SHARED[0]), ("run", SHARED[1])]
    classes = (base for name in names() for base in reversed(get(name).options.__mro__) if dataclasses.is_dataclass(base))
    for cls in dict.fromkeys(classes):
        declared = own_fields(cls)
        if declared:
            groups.append((f"options of {', '.join(takers(declared[0].name))}", cls))
    return groups


def configure(algo: str, **values: Any) -> QuantConfig:
    """The validated request for `algo`, each value handed to the dataclass that declares it.

    A value of another algorithm's options is refused in one line naming the algorithms
    that take it, so a flag or a workflow option meant for GPTQ cannot pass silently to RTN.
    """
    algorithm = get(algo)
    parts: dict[type, dict[str, Any]] = {cls: {} for cls in (*SHARED, algorithm.options)}
    for name, value in values.items():
        owner = next((cls for cls in parts if name in {f.name for f in dataclasses.fields(cls)}), None)
        if owner is None:
            others = takers(name)
            if not others:
                raise UsageError(f"unknown option {name!r}")
            raise UsageError(f"{flag(name)} is an option of {', '.join(others)}; --algo {algo} does not take it")
        parts[owner][name] = value
    grid, run, options = (cls(**kwargs) for cls, kwargs in parts.items())
    return QuantConfig(algo, grid, run, options)
