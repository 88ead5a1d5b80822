"""Each part of a quantization request refuses a bad value in one line naming it and what is allowed."""

from __future__ import annotations

import pytest

from moequant.errors import UsageError
from moequant.quant.awq_search import AWQConfig
from moequant.quant.config import QuantConfig, RunConfig
from moequant.quant.grid import GridSpec
from moequant.quant.registry import configure
from moequant.quant.rtn import RTNConfig
from moequant.quant.sequential import AGQConfig, GPTQConfig


@pytest.mark.parametrize(
    "cls, values, message",
    [
        (GridSpec, {"wbits": 9}, "wbits must be an integer from 2 to 8, got 9"),
        (GridSpec, {"wbits": 1}, "wbits must be an integer from 2 to 8, got 1"),
        (GridSpec, {"wbits": 4, "groupsize": 0}, "groupsize must be -1 .* got 0"),
        (GridSpec, {"wbits": 4, "clip_norm": 0}, "clip_norm must be positive, got 0"),
        (GridSpec, {"wbits": 4, "clip_grid": 0}, "clip_grid must be at least 1, got 0"),
        (GridSpec, {"wbits": 4, "clip_maxshrink": 1.0}, r"clip_maxshrink must lie in \[0, 1\), got 1.0"),
        (GridSpec, {"wbits": 4, "scale_dtype": "int8"}, r"scale_dtype must be one of \('float32', 'bfloat16', 'float16'\), got 'int8'"),
        (RunConfig, {"batch_size": 0}, "batch_size must be at least 1, got 0"),
        (RunConfig, {"expert_chunk": -1}, "expert_chunk must be 0 .* got -1"),
        (RunConfig, {"min_tokens": -1}, "min_tokens must be non-negative, got -1"),
        (RunConfig, {"hessian_dtype": "float16"}, r"hessian_dtype must be one of \('float32', 'float64'\), got 'float16'"),
        (GPTQConfig, {"damp": -1.0}, "damp must be non-negative"),
        (GPTQConfig, {"blocksize": 0}, "blocksize must be at least 1, got 0"),
        (GPTQConfig, {"all_experts": "yes"}, "all_experts must be true or false, got 'yes'"),
        (AGQConfig, {"agq_weight": "c3"}, r"agq_weight must be one of \('c', 'c2'\), got 'c3'"),
        (AGQConfig, {"agq_projections": ("gate", "w1")}, r"agq_projections \['w1'\] not allowed; choose from"),
        (AGQConfig, {"damp": -1.0}, "damp must be non-negative"),
        (AWQConfig, {"awq_n_grid": 0}, "awq_n_grid must be a positive integer, got 0"),
        (AWQConfig, {"awq_alpha": 1.5}, r"awq_alpha must be null \(searched\) or a number in \[0, 1\], got 1.5"),
        (AWQConfig, {"awq_clip_grid": 0}, "awq_clip_grid must be a positive integer, got 0"),
        (AWQConfig, {"awq_clip_maxshrink": 0}, r"awq_clip_maxshrink must lie in \(0, 1\], got 0"),
        (AWQConfig, {"awq_search_tokens": 0}, "awq_search_tokens must be a positive integer, got 0"),
        (AWQConfig, {"awq_clip_tokens": 0}, "awq_clip_tokens must be a positive integer, got 0"),
        (AWQConfig, {"awq_search_clip": 1}, "awq_search_clip must be true or false, got 1"),
    ],
)
def test_a_bad_value_is_one_line_naming_it(cls, values, message):
    with pytest.raises(UsageError, match=message) as err:
        cls(**values)
    assert len(str(err.value).splitlines()) == 1


def test_defaults_are_valid():
    GridSpec(4), RunConfig(), RTNConfig(), GPTQConfig(), AGQConfig(), AWQConfig()


def test_projections_from_a_list_become_a_tuple():
    assert AGQConfig(agq_projections=["up", "down"]).agq_projections == ("up", "down")


def test_groups_must_tile_every_row():
    GridSpec(4, groupsize=8).check_in_features(32, "layers.0.q")
    with pytest.raises(UsageError, match="groupsize 8 does not divide the 12 input features of layers.0.q"):
        GridSpec(4, groupsize=8).check_in_features(12, "layers.0.q")


def test_to_dict_is_flat_and_names_every_option_once():
    payload = configure("agq", wbits=3, act_order=True, agq_projections=("up", "down")).to_dict()
    assert payload["algo"] == "agq" and payload["wbits"] == 3 and payload["act_order"] is True
    assert payload["agq_projections"] == ["up", "down"] and payload["batch_size"] == 16
    assert set(payload) == {
        "algo", "wbits", "sym", "groupsize", "clip", "clip_norm", "clip_grid", "clip_maxshrink", "scale_dtype",
        "batch_size", "expert_chunk", "device", "quantize_router", "min_tokens", "hessian_dtype",
        "damp", "blocksize", "act_order", "all_experts", "agq_weight", "agq_projections",
    }
    assert "damp" not in QuantConfig("rtn", GridSpec(4), RunConfig(), RTNConfig()).to_dict()
    assert configure("awq", wbits=4, awq_alpha=0.5).to_dict()["awq_alpha"] == 0.5
