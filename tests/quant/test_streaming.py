"""`moequant quantize --stream`: one decoder layer at a time from the shards, and the same checkpoint as in memory.

The streamed and the in-memory run must write byte-identical shards for every weight
layout (fused experts, per-expert module lists, remote code, a float32-kept router), since
streaming only changes where a layer lives between its turns.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from moequant.cli import main
from moequant.models.streaming import offload_folder
from tests.quant.helpers import write_calib


def _quantize(capsys, source: Path, out: Path, algo: str, calib: Path | None, *extra: str) -> None:
    capsys.readouterr()
    argv = ["quantize", "--model", str(source), "--algo", algo, "--wbits", "4", "--out", str(out), "--device", "cpu"]
    code = main([*argv, *(["--calib", str(calib)] if calib else []), *extra])
    assert code == 0, capsys.readouterr().err


def _shards(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*.safetensors"))}


@pytest.fixture
def source(tmp_path, make_tiny, tokenizer):
    def build(layout: str, dtype: torch.dtype = torch.float32) -> Path:
        out = tmp_path / f"src-{layout}"
        model = make_tiny(layout, dtype=dtype)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return out

    return build


@pytest.mark.parametrize(
    "layout, algo",
    [("mixtral", "gptq"), ("deepseek_v3", "agq"), ("qwen2_moe", "rtn"), ("deepseek_remote", "agq"), ("olmoe", "awq")],
)
def test_streamed_checkpoint_is_byte_identical_to_the_in_memory_one(tmp_path, source, tokenizer, capsys, layout, algo):
    src = source(layout)
    calib = None if algo == "rtn" else write_calib(tmp_path / "calib.jsonl", tokenizer, nsamples=4, seqlen=16)
    remote = ["--trust-remote-code"] if layout == "deepseek_remote" else []
    _quantize(capsys, src, tmp_path / "memory", algo, calib, *remote)
    _quantize(capsys, src, tmp_path / "streamed", algo, calib, "--stream", *remote)
    memory, streamed = _shards(tmp_path / "memory"), _shards(tmp_path / "streamed")
    assert memory.keys() == streamed.keys() and len(memory) > 2
    assert [name for name in memory if memory[name] != streamed[name]] == []
    index = "model.safetensors.index.json"
    assert (tmp_path / "memory" / index).read_text() == (tmp_path / "streamed" / index).read_text()
    report = "report.csv"
    assert (tmp_path / "memory" / report).read_text() == (tmp_path / "streamed" / report).read_text()
    assert not offload_folder(tmp_path / "streamed").exists(), "the staged tensors are removed"


def test_only_one_layer_is_resident_at_a_time(tmp_path, source, tokenizer, monkeypatch):
    from moequant.models.streaming import OffloadedLayers

    resident: list[int] = []
    load = OffloadedLayers.load

    def counting(self, index, module, device="cpu"):
        load(self, index, module, device)
        resident.append(len(self.resident))

    monkeypatch.setattr(OffloadedLayers, "load", counting)
    calib = write_calib(tmp_path / "calib.jsonl", tokenizer, nsamples=4, seqlen=16)
    src = source("mixtral")
    assert main(["quantize", "--model", str(src), "--algo", "gptq", "--wbits", "4", "--calib", str(calib),
                 "--out", str(tmp_path / "q"), "--stream", "--device", "cpu"]) == 0
    assert resident == [1] * json.loads((src / "config.json").read_text())["num_hidden_layers"]


def test_a_shard_missing_a_tensor_fails_in_one_line_naming_it(tmp_path, source, capsys):
    from safetensors.torch import load_file, save_file

    src = source("mixtral")
    state = load_file(str(src / "model.safetensors"))
    missing = "model.layers.1.self_attn.k_proj.weight"
    del state[missing]
    save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})
    capsys.readouterr()
    code = main(["quantize", "--model", str(src), "--algo", "rtn", "--wbits", "4", "--out", str(tmp_path / "q"),
                 "--stream", "--device", "cpu"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("moequant quantize: error: ") and missing in last and str(src) in last, last
    assert not (tmp_path / "q").exists()


def test_a_streamed_quantize_killed_mid_run_resumes_to_the_same_checkpoint(tmp_path, source, tokenizer, capsys, monkeypatch):
    from moequant.quant import sequential

    src = source("deepseek_v3")
    calib = write_calib(tmp_path / "calib.jsonl", tokenizer, nsamples=4, seqlen=16)
    _quantize(capsys, src, tmp_path / "whole", "agq", calib, "--stream")
    original = sequential.GPTQLayer.__call__

    def killed_at_layer_2(self, ctx):
        if ctx.layer.index == 2:
            raise KeyboardInterrupt
        original(self, ctx)

    monkeypatch.setattr(sequential.GPTQLayer, "__call__", killed_at_layer_2)
    code = main(["quantize", "--model", str(src), "--algo", "agq", "--wbits", "4", "--calib", str(calib),
                 "--out", str(tmp_path / "resumed"), "--stream", "--device", "cpu"])
    assert code != 0 and "interrupted" in capsys.readouterr().err
    assert not (tmp_path / "resumed").exists() and (tmp_path / "resumed.journal").is_dir()
    monkeypatch.setattr(sequential.GPTQLayer, "__call__", original)
    capsys.readouterr()
    assert main(["quantize", "--model", str(src), "--algo", "agq", "--wbits", "4", "--calib", str(calib),
                 "--out", str(tmp_path / "resumed"), "--stream", "--device", "cpu"]) == 0
    assert "resuming after layer 2/3" in capsys.readouterr().err
    assert _shards(tmp_path / "whole") == _shards(tmp_path / "resumed")
    assert not (tmp_path / "resumed.journal").exists()
