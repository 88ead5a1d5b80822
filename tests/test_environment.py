"""The install files agree: pyproject's ranges, the lock, the conda environments and the Makefile.

No conda runs here, so what can be checked is the files themselves: a conda-forge-only
environment (the pytorch channel ends at torch 2.5), versions taken from the lock, and a
lock that satisfies every declared range.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENTS = {"environment.yml": ".", "workflow/envs/moequant.yaml": "../.."}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def _declared() -> list[Requirement]:
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    return [Requirement(r) for r in [*project["dependencies"], *extras["workflow"], *extras["test"]]]


def test_lock_pins_every_declared_dependency_inside_its_range() -> None:
    pins = _lock()
    for requirement in _declared():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is declared but not locked"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"lock {name}=={pins[name]} outside {requirement}"


def test_lock_matches_the_running_environment_and_python() -> None:
    """The suite runs on the locked versions (CI installs from the lock)."""
    from importlib.metadata import version

    for name in ("torch", "transformers", "safetensors", "lm-eval", "snakemake", "compressed-tensors"):
        locked = _lock()[canonicalize_name(name)]
        assert version(name).split("+")[0] == locked, f"{name} {version(name)} installed, {locked} locked"
    python = re.search(r"Python (\d+\.\d+)", (ROOT / "constraints.txt").read_text().splitlines()[0]).group(1)
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(python)
    assert f"{sys.version_info.major}.{sys.version_info.minor}" == python


@pytest.mark.parametrize("path", sorted(ENVIRONMENTS))
def test_conda_environment_builds_from_conda_forge_and_the_lock(path: str) -> None:
    env = yaml.safe_load((ROOT / path).read_text())
    assert env["channels"] == ["conda-forge"], "the pytorch channel ends at torch 2.5; transformers 5 needs >= 2.6"
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    python = next(d for d in conda if d.startswith("python"))
    assert SpecifierSet(_pyproject()["project"]["requires-python"]).contains(python.split("=", 1)[1])
    assert not any(d.startswith(("pytorch", "torch")) for d in conda), "torch comes from pip, pinned by the lock"
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    root = ENVIRONMENTS[path]
    assert f"-c {root}/constraints.txt".replace("./", "") in [line.replace("./", "") for line in pip]
    assert any(line.startswith(f"-e {root}") for line in pip), "the package itself, from pyproject"
    for line in pip:
        if not line.startswith("-"):
            assert "fast-hadamard" not in line, "the CUDA kernel builds afterwards, without build isolation"
            assert Requirement(line).specifier == SpecifierSet(), f"{line!r}: versions come from the lock"
    assert (ROOT / Path(path).parent / root / "constraints.txt").resolve() == (ROOT / "constraints.txt").resolve()


def test_makefile_installs_torch_at_its_locked_version() -> None:
    torch = re.search(r"^TORCH \?= torch==(\S+)$", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert _lock()["torch"] == torch
