"""A copy of the workflow in a temporary folder, run once with the fake `moequant`.

Tests that change code or config work on their own copy of that finished run (timestamps
and Snakemake's metadata kept), so each one asks a dry run what a change would rerun.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.workflow.harness import copy_workflow, fake_cli_env, snakemake


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """config/test.yaml run to completion with the fake CLI."""
    root = copy_workflow(tmp_path_factory.mktemp("workflow") / "repo")
    env = fake_cli_env(root.parent / "bin")
    result = snakemake(root, env, "--configfile", "config/test.yaml")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return root, env


@pytest.fixture()
def run_copy(finished_run: tuple[Path, dict[str, str]], tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root, env = finished_run
    copy = tmp_path / "repo"
    shutil.copytree(root, copy, symlinks=True)
    return copy, env
