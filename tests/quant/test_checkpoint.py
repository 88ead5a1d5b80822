import json

import pytest
import torch

from moequant.models.loading import load_model
from moequant.quant.checkpoint import load_quantized, load_weights, save_quantized
from moequant.quant.config import QuantConfig
from moequant.quant.registry import get
from moequant.quant.report import read_report
from tests.quant.helpers import calib_ids


@pytest.mark.parametrize(
    "layout, config",
    [
        ("mixtral", QuantConfig(algo="gptq", wbits=3)),
        ("qwen2_moe", QuantConfig(algo="agq", wbits=4, groupsize=8, sym=False, act_order=True)),
        ("deepseek_remote", QuantConfig(algo="agq", wbits=2, groupsize=8)),
        ("deepseek_v3", QuantConfig(algo="rtn", wbits=8, quantize_router=False)),
    ],
)
def test_save_load_round_trip_is_bit_exact(tmp_path, make_tiny, tokenizer, layout, config):
    model = make_tiny(layout)
    result = get(config.algo).quantize(model, calib_ids(4, 16), config)
    out = save_quantized(tmp_path / "ckpt", model, result, {"method": config.algo, "config": config.to_dict()}, tokenizer)
    loaded = load_model(str(out), trust_remote_code=True)
    expected = dict(model.state_dict())
    got = dict(loaded.state_dict())
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
    for address, weight in load_weights(out).items():
        held = result.weights[address].unpacked()
        assert torch.equal(weight.codes, held.codes), address
        assert torch.equal(weight.scale, held.scale), address
        assert torch.equal(weight.zero, held.zero), address
    meta = json.loads((out / "quantization.json").read_text())
    assert meta["method"] == config.algo and meta["moequant_version"]
    rows = read_report(out / "report.csv")
    assert len(rows) == len(result.rows)
    assert {r.expert for r in rows if r.module == "experts.down"} == set(range(4))


def test_checkpoint_stores_packed_codes_not_floats(tmp_path, make_tiny):
    from safetensors.torch import load_file

    model = make_tiny("mixtral")
    result = get("rtn").quantize(model, None, QuantConfig(algo="rtn", wbits=3))
    out = save_quantized(tmp_path / "ckpt", model, result, {})
    stored = load_file(str(out / "quantized.safetensors"))
    codes = stored["layers.0.experts.down.codes"]
    assert codes.dtype == torch.uint8 and codes.numel() == 4 * 32 * 48 * 3 // 8
    fp = load_file(str(out / "fp_weights.safetensors"))
    assert not any("experts" in name or "q_proj" in name for name in fp)


def test_loading_into_another_dtype(tmp_path, make_tiny):
    model = make_tiny("olmoe")
    result = get("rtn").quantize(model, None, QuantConfig(algo="rtn", wbits=4))
    out = save_quantized(tmp_path / "ckpt", model, result, {})
    loaded = load_quantized(out, dtype=torch.bfloat16)
    assert next(loaded.parameters()).dtype == torch.bfloat16
