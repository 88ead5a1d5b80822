"""A real SLURM cluster on localhost for the module's tests, stopped daemon by daemon after."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CLUSTER_SCRIPT = Path(__file__).with_name("cluster.sh")
CANNOT_START = 3


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """SLURM_CONF and the account of a started cluster; skips with the reason when it cannot start."""
    state = tmp_path_factory.mktemp("slurm")
    started = subprocess.run(["bash", str(CLUSTER_SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=300)
    if started.returncode == CANNOT_START:
        pytest.skip(started.stdout.strip().splitlines()[0])
    if started.returncode != 0:
        subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop", str(state)], capture_output=True, timeout=120)
        pytest.skip(f"SLURM daemons did not start: {(started.stderr or started.stdout).strip()[-1500:]}")
    values = dict(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    try:
        yield {"SLURM_CONF": values["SLURM_CONF"], "ACCOUNT": values["ACCOUNT"], "STATE": str(state)}
    finally:
        stopped = subprocess.run(["bash", str(CLUSTER_SCRIPT), "stop", str(state)], capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stderr


def slurm_env(base: dict[str, str], cluster: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in base.items() if not k.startswith("SLURM_")}
    env["SLURM_CONF"] = cluster["SLURM_CONF"]
    env.setdefault("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "1"))
    return env
