"""The workflow through `--profile profiles/slurm` on a real local SLURM cluster.

The profile under test is profiles/slurm/config.yaml with only its placeholders filled in
(account, partitions) and the first status check after 1 s instead of 40 s.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.slurm.conftest import slurm_env
from tests.workflow.harness import REPO, copy_workflow, fake_cli_env, snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

def _test_profile(root: Path, account: str) -> Path:
    text = (REPO / "profiles" / "slurm" / "config.yaml").read_text()
    filled = text.replace("<your_account>", account).replace("<cpu_partition>", "cpu").replace("<gpu_partition>", "gpu")
    profile = yaml.safe_load(filled)
    profile["slurm-init-seconds-before-status-checks"] = 1
    profile["latency-wait"] = 5
    folder = root / "profiles" / "slurm-test"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile))
    return folder


def test_tiny_config_runs_end_to_end_on_slurm(slurm_cluster, tmp_path):
    """The real CLI: a tiny demo is built, calibrated, rotated, quantized, evaluated, tabled."""
    root = copy_workflow(tmp_path / "repo")
    profile = _test_profile(root, slurm_cluster["ACCOUNT"])
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env = slurm_env(env, slurm_cluster)
    result = snakemake(root, env, "--profile", str(profile), "--configfile", "config/test.yaml")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Job" in output and "has been submitted with SLURM jobid" in output, output[-3000:]
    tables = root / "results" / "tables"
    assert (tables / "main.md").read_text().startswith("### Tiny W4")
    assert (tables / "ppl_vs_bits-demo.png").stat().st_size > 0
    placement = _placement_by_rule(env)
    assert placement["quantize"] == {("gpu", True)}, placement
    assert placement["eval_ppl"] == {("gpu", True)}, placement
    assert placement["build_demo"] == {("cpu", False)}, placement


def _placement_by_rule(env: dict[str, str]) -> dict[str, set[tuple[str, bool]]]:
    """Rule → {(partition, got a GPU)} of every job SLURM accounted, from the jobs' comments."""
    listing = subprocess.run(
        ["sacct", "-a", "-X", "-n", "-P", "--format=Comment,Partition,AllocTRES"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout
    placement: dict[str, set[tuple[str, bool]]] = {}
    for line in listing.splitlines():
        comment, partition, tres = line.split("|")
        match = re.match(r"rule_([a-z_]+?)(_wildcards_.*)?$", comment)
        if match:
            placement.setdefault(match[1], set()).add((partition, "gres/gpu=1" in tres))
    return placement


def test_failing_job_is_reported_failed_and_snakemake_exits_nonzero(slurm_cluster, tmp_path):
    root = copy_workflow(tmp_path / "repo")
    profile = _test_profile(root, slurm_cluster["ACCOUNT"])
    env = slurm_env(fake_cli_env(tmp_path / "bin", FAKE_MOEQUANT_FAIL="quantize"), slurm_cluster)
    target = "results/demo/quant/rtn-w4"  # two jobs: the (fake) demo build, then the failing quantize
    result = snakemake(root, env, target, "--profile", str(profile), "--configfile", "config/test.yaml")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert "SLURM status is: 'FAILED'" in output, output[-4000:]
    assert not list((root / "results" / "demo" / "quant").glob("*")), "a failed job's output must not survive"
