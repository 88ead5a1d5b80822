"""The checkpoint is compressed-tensors `pack-quantized`: stock transformers loads exactly the
model moequant quantized in memory, under the Hub's per-expert names."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from moequant.errors import UsageError
from moequant.loading import load_model
from moequant.quant.checkpoint import INDEX_FILE, load_quantized, save_quantized
from moequant.quant.registry import configure, get
from moequant.quant.report import read_report
from moequant.quant.validate import validate_checkpoint
from moequant.rotation import RotationConfig, rotate_model
from tests.quant.helpers import calib_ids

EXPERT_NAMES = {
    "mixtral": ("block_sparse_moe.experts.{e}", ("w1", "w2", "w3"), "block_sparse_moe.gate"),
    "qwen2_moe": ("mlp.experts.{e}", ("gate_proj", "up_proj", "down_proj"), "mlp.gate"),
    "qwen3_moe": ("mlp.experts.{e}", ("gate_proj", "up_proj", "down_proj"), "mlp.gate"),
    "deepseek_v2": ("mlp.experts.{e}", ("gate_proj", "up_proj", "down_proj"), "mlp.gate"),
    "deepseek_v3": ("mlp.experts.{e}", ("gate_proj", "up_proj", "down_proj"), "mlp.gate"),
    "olmoe": ("mlp.experts.{e}", ("gate_proj", "up_proj", "down_proj"), "mlp.gate"),
    "deepseek_remote": ("mlp.experts.{e}", ("gate_proj", "up_proj", "down_proj"), "mlp.gate"),
}

CASES = [
    # layout, config, model dtype, rotated
    ("mixtral", configure("rtn", wbits=4), torch.float32, False),
    ("mixtral", configure("gptq", wbits=8, groupsize=8, scale_dtype="bfloat16"), torch.float32, True),
    ("qwen2_moe", configure("gptq", wbits=4, groupsize=8, act_order=True), torch.float32, False),
    ("qwen2_moe", configure("rtn", wbits=8, scale_dtype="bfloat16"), torch.bfloat16, True),
    ("qwen3_moe", configure("agq", wbits=4, groupsize=8, scale_dtype="bfloat16"), torch.bfloat16, False),
    ("deepseek_v2", configure("agq", wbits=4), torch.float32, True),
    ("deepseek_v3", configure("rtn", wbits=8, groupsize=8, quantize_router=False, scale_dtype="bfloat16"), torch.bfloat16, False),
    ("deepseek_v3", configure("gptq", wbits=4, scale_dtype="float16"), torch.float32, True),
    ("olmoe", configure("rtn", wbits=4, groupsize=16, scale_dtype="float16"), torch.float16, False),
    ("deepseek_remote", configure("gptq", wbits=4, groupsize=8), torch.float32, False),
    ("deepseek_remote", configure("rtn", wbits=8, scale_dtype="bfloat16"), torch.bfloat16, True),
]


def quantized_checkpoint(tmp_path, make_tiny, tokenizer, layout, config, dtype=torch.float32, rotated=False):
    model = make_tiny(layout, dtype=dtype)
    if rotated:
        rotate_model(model, RotationConfig(seed=0))
    result = get(config.algo).quantize(model, calib_ids(4, 16), config)
    metadata = {"method": config.algo, "config": config.to_dict()}
    return model, result, save_quantized(tmp_path / "ckpt", model, result, metadata, tokenizer)


def shard_keys(out) -> dict[str, str]:
    return json.loads((out / INDEX_FILE).read_text())["weight_map"]


@pytest.mark.parametrize("layout, config, dtype, rotated", CASES, ids=lambda v: getattr(v, "algo", str(v)))
def test_stock_transformers_loads_the_quantized_model_exactly(tmp_path, make_tiny, tokenizer, layout, config, dtype, rotated):
    from transformers import AutoModelForCausalLM

    model, result, out = quantized_checkpoint(tmp_path, make_tiny, tokenizer, layout, config, dtype, rotated)
    ids = calib_ids(2, 12, seed=1)
    stock = AutoModelForCausalLM.from_pretrained(str(out), trust_remote_code=layout == "deepseek_remote")
    with torch.no_grad():
        assert torch.equal(stock(ids).logits, model(ids).logits)
    loaded = load_model(str(out), dtype=dtype)
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]) and tensor.dtype == got[name].dtype, name

    keys = shard_keys(out)
    experts, projections, router = EXPERT_NAMES[layout]
    last = f"model.layers.{len(model.model.layers) - 1}"
    for e in range(4):
        for proj in projections:
            module = f"{last}.{experts.format(e=e)}.{proj}"
            assert {f"{module}.weight_packed", f"{module}.weight_scale", f"{module}.weight_shape"} <= keys.keys()
            assert f"{module}.weight" not in keys
    assert f"{last}.{router}.weight" in keys and not any(k.startswith(f"{last}.{router}.weight_") for k in keys)
    assert not any("gate_up_proj" in k for k in keys)
    with safe_open(str(out / keys[f"{last}.self_attn.o_proj.weight_scale"]), "pt") as handle:
        assert handle.get_tensor(f"{last}.self_attn.o_proj.weight_scale").dtype == dtype
    quantization = json.loads((out / "config.json").read_text())["quantization_config"]
    assert quantization["quant_method"] == "compressed-tensors" and quantization["format"] == "pack-quantized"
    assert f"{last}.{router}" in quantization["ignore"]
    meta = json.loads((out / "quantization.json").read_text())
    assert meta["grid"]["scale_dtype"] == config.grid.scale_dtype
    assert meta["servable"]["vllm"] is (config.grid.wbits in (4, 8))
    assert len(read_report(out / "report.csv")) == len(result.rows)
    coverage = validate_checkpoint(out, load=False)
    assert coverage.experts == len([m for m in model.model.layers if hasattr(m.mlp, "experts")]) * 4 * 3


def test_shards_follow_the_hub_naming_and_hold_packed_int32(tmp_path, make_tiny, tokenizer):
    model, _, out = quantized_checkpoint(tmp_path, make_tiny, tokenizer, "olmoe", configure("rtn", wbits=3))
    index = json.loads((out / INDEX_FILE).read_text())
    files = sorted(set(index["weight_map"].values()))
    assert files == [f"model-0000{k}-of-00003.safetensors" for k in (1, 2, 3)]
    assert not (out / "model.safetensors").exists()
    name = "model.layers.0.mlp.experts.2.down_proj.weight_packed"
    with safe_open(str(out / index["weight_map"][name]), "pt") as handle:
        packed = handle.get_tensor(name)
    assert packed.dtype == torch.int32 and tuple(packed.shape) == (32, 48 * 3 // 32 + 1)
    meta = json.loads((out / "quantization.json").read_text())
    assert meta["servable"]["vllm"] is False and "W3" in meta["servable"]["note"]


def test_loading_into_another_dtype(tmp_path, make_tiny, tokenizer):
    model, _, out = quantized_checkpoint(tmp_path, make_tiny, tokenizer, "olmoe", configure("rtn", wbits=4))
    loaded = load_quantized(out, dtype=torch.bfloat16)
    assert next(loaded.parameters()).dtype == torch.bfloat16
    assert torch.equal(loaded.model.layers[0].mlp.experts.down_proj, model.model.layers[0].mlp.experts.down_proj.bfloat16())


def test_asymmetric_grids_are_refused(tmp_path, make_tiny):
    model = make_tiny("mixtral")
    result = get("rtn").quantize(model, None, configure("rtn", wbits=4, sym=False))
    with pytest.raises(UsageError, match="asymmetric"):
        save_quantized(tmp_path / "ckpt", model, result, {})
    assert not (tmp_path / "ckpt").exists()


def test_scales_wider_than_a_half_precision_model_are_refused(tmp_path, make_tiny):
    model = make_tiny("mixtral", dtype=torch.bfloat16)
    result = get("rtn").quantize(model, None, configure("rtn", wbits=4, scale_dtype="float32"))
    with pytest.raises(UsageError, match="rounded when transformers loads them"):
        save_quantized(tmp_path / "ckpt", model, result, {})


def test_unquantized_tensors_the_hub_splits_are_refused_before_writing(tmp_path):
    """bailing-hybrid's conv1d is q/k/v_conv1d on the Hub; stock loading of the quantized checkpoint would fail."""
    from moequant.models.synthetic import tiny_any_model

    model = tiny_any_model("bailing_hybrid")
    result = get("rtn").quantize(model, None, configure("rtn", wbits=4, device="cpu"))
    with pytest.raises(UsageError, match=r"self_attn\.conv1d is 3 tensors in the Hub format \(k_conv1d, q_conv1d, v_conv1d\)"):
        save_quantized(tmp_path / "ckpt", model, result, {})
    assert not (tmp_path / "ckpt").exists()


def _rewrite_shard(out, name, change):
    """Apply `change(tensors)` to the shard holding `name`, keeping the index in step."""
    index = json.loads((out / INDEX_FILE).read_text())
    shard = out / index["weight_map"][name]
    with safe_open(str(shard), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    change(tensors)
    save_file(tensors, str(shard))
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != shard.name or k in tensors}
    (out / INDEX_FILE).write_text(json.dumps(index))


@pytest.fixture
def mixtral_checkpoint(tmp_path, make_tiny, tokenizer):
    return quantized_checkpoint(tmp_path, make_tiny, tokenizer, "mixtral", configure("rtn", wbits=4))[2]


def test_validate_passes_and_reports_coverage(mixtral_checkpoint, capsys):
    from moequant.cli import main

    assert main(["validate", str(mixtral_checkpoint)]) == 0
    line = capsys.readouterr().out
    assert "32 of 32 decoder linears quantized (24 expert, 8 other)" in line
    assert "2 routing linears dense" in line and "loads with stock transformers" in line


def test_validate_names_a_deleted_expert_tensor(mixtral_checkpoint, capsys):
    from moequant.cli import main

    module = "model.layers.1.block_sparse_moe.experts.2.w2"
    _rewrite_shard(mixtral_checkpoint, f"{module}.weight_packed", lambda t: t.pop(f"{module}.weight_packed"))
    assert main(["validate", str(mixtral_checkpoint), "--no-load"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{module}.weight_packed" in err


def test_validate_names_a_nan_scale(mixtral_checkpoint, capsys):
    from moequant.cli import main

    name = "model.layers.0.self_attn.k_proj.weight_scale"
    _rewrite_shard(mixtral_checkpoint, name, lambda t: t[name].view(-1)[3].fill_(float("nan")))
    assert main(["validate", str(mixtral_checkpoint), "--no-load"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and name in err and "finite" in err


def test_validate_names_a_weight_left_floating_point(mixtral_checkpoint):
    module = "model.layers.0.block_sparse_moe.experts.0.w1"

    def dense(tensors):
        tensors[f"{module}.weight"] = torch.zeros(48, 32)

    _rewrite_shard(mixtral_checkpoint, f"{module}.weight_packed", dense)
    index = json.loads((mixtral_checkpoint / INDEX_FILE).read_text())
    index["weight_map"][f"{module}.weight"] = index["weight_map"][f"{module}.weight_packed"]
    (mixtral_checkpoint / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(UsageError, match=f"{module}.weight: left floating point"):
        validate_checkpoint(mixtral_checkpoint, load=False)


@pytest.mark.parametrize("damage", ["truncated", "missing", "garbage"])
def test_damaged_shards_fail_in_one_line_naming_the_file(mixtral_checkpoint, damage):
    shard = mixtral_checkpoint / "model-00002-of-00003.safetensors"
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-100])
    elif damage == "missing":
        shard.unlink()
    else:
        shard.write_bytes(b"not a safetensors file")
    for load in (lambda: load_model(str(mixtral_checkpoint)), lambda: validate_checkpoint(mixtral_checkpoint)):
        with pytest.raises(UsageError, match=shard.name) as caught:
            load()
        assert "\n" not in str(caught.value)


def test_a_tensor_missing_from_its_shard_fails_naming_it(mixtral_checkpoint):
    name = "model.layers.1.input_layernorm.weight"
    index = json.loads((mixtral_checkpoint / INDEX_FILE).read_text())
    shard = mixtral_checkpoint / index["weight_map"][name]
    with safe_open(str(shard), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys() if key != name}
    save_file(tensors, str(shard))
    with pytest.raises(UsageError, match=f"lacks '{name}'"):
        load_model(str(mixtral_checkpoint))


def test_a_bank_the_hub_keeps_fused_is_written_one_linear_per_expert_and_fused_back_on_load(tmp_path, tokenizer):
    """gpt-oss stores gate_up_proj [E, H, 2I] with gate and up interleaved, biased: per-expert linears on disk."""
    from moequant.models.synthetic import tiny_any_model

    model = tiny_any_model("gpt_oss")
    probe = torch.randint(3, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(5))
    calib = torch.randint(3, model.config.vocab_size, (4, 16), generator=torch.Generator().manual_seed(0))
    result = get("rtn").quantize(model, calib, configure("rtn", wbits=4, device="cpu"))
    out = save_quantized(tmp_path / "ckpt", model, result, {"method": "rtn"}, tokenizer)
    names = set(json.loads((out / INDEX_FILE).read_text())["weight_map"])
    experts = model.config.num_local_experts
    for proj in ("gate", "up", "down"):
        assert {f"model.layers.0.mlp.experts.{e}.{proj}_proj.{s}" for e in range(experts) for s in ("weight_packed", "bias")} <= names
    assert not any(name.endswith(("gate_up_proj", "experts.down_proj")) for name in names)
    meta = json.loads((out / "quantization.json").read_text())
    assert meta["expert_splits"] == [{"experts": "mlp.experts", "transposed": True, "interleaved": True, "bias": True}]
    with torch.no_grad():
        assert torch.equal(load_quantized(out)(probe).logits, model(probe).logits)
    assert validate_checkpoint(out)
