"""Run the workflow from a temporary copy of the repository, with a fake or the real CLI.

Shared by the workflow tests and the SLURM test: copying keeps the checkout clean and lets a
test edit code or config without touching anyone else's files.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
if not SNAKEMAKE.exists():
    SNAKEMAKE = Path(shutil.which("snakemake") or SNAKEMAKE)
COPIED = ("Snakefile", "workflow", "config", "profiles", "moequant")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", "results", ".snakemake")


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=IGNORED, symlinks=True)
        else:
            shutil.copy2(source, dest / name)
    return dest


def fake_cli_env(bin_dir: Path, **extra: str) -> dict[str, str]:
    bin_dir.mkdir(parents=True, exist_ok=True)
    launcher = bin_dir / "moequant"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).with_name("fake_moequant.py")}" "$@"\n')
    launcher.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(bin_dir), str(SNAKEMAKE.parent), env.get("PATH", "")])
    env.update(extra)
    return env


def snakemake(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SNAKEMAKE), "--cores", "1", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def planned_jobs(result: subprocess.CompletedProcess[str]) -> dict[str, int]:
    """Rule → job count from a dry run's "Job stats" table (empty when nothing is to be done)."""
    assert result.returncode == 0, result.stdout + result.stderr
    text = result.stdout + result.stderr
    if "Job stats:" not in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match[1]] = int(match[2])
    counts.pop("total", None)
    return counts


def planned_outputs(result: subprocess.CompletedProcess[str]) -> list[str]:
    return re.findall(r"^\s+output: (.+)$", result.stdout + result.stderr, re.MULTILINE)


