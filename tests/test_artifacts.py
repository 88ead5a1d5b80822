"""Atomic writers: all or nothing, with ordinary permissions."""

from __future__ import annotations

import os
import stat

import pytest

from moequant.artifacts import atomic_dir, atomic_file


def test_failed_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("interrupted")
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "out.json") as handle:
            handle.write("{")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_finished_artifacts_replace_old_ones_with_umask_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "stale").write_text("old")
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "new").write_text("new")
        with atomic_file(tmp_path / "out.json") as handle:
            handle.write("{}")
    finally:
        os.umask(previous)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["new"]
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "out.json").stat().st_mode) == 0o644


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_safetensors_inside_an_artifact_follow_the_umask(tmp_path, umask: int, mode: int):
    """safetensors creates its files 0600; a finished artifact must not keep that."""
    import torch
    from safetensors.torch import save_file

    previous = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "ckpt") as tmp:
            (tmp / "sub").mkdir()
            save_file({"w": torch.zeros(2)}, str(tmp / "sub" / "model.safetensors"))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "ckpt" / "sub" / "model.safetensors").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "ckpt" / "sub").stat().st_mode) == 0o777 & ~umask
