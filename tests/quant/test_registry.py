"""The registry finds every algorithm, builds its request and refuses options it does not take."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from moequant.errors import UsageError
from moequant.quant import registry
from moequant.quant.algorithm import Algorithm
from moequant.quant.awq_search import AWQConfig
from moequant.quant.options import option
from moequant.quant.registry import configure, get, option_groups
from moequant.quant.sequential import AGQConfig, GPTQConfig


def test_registry_names_the_algorithms_it_has():
    assert registry.names() == ["agq", "agq_awq", "awq", "gptq", "rtn"]
    with pytest.raises(UsageError, match="unknown algorithm 'nope'; available: agq, agq_awq, awq, gptq, rtn"):
        get("nope")


def test_each_algorithm_has_its_options_class():
    assert get("gptq").options is GPTQConfig and get("agq").options is AGQConfig
    assert get("awq").options is get("agq_awq").options is AWQConfig
    assert not get("rtn").needs_calibration and all(get(n).needs_calibration for n in ("gptq", "agq", "awq"))


def test_configure_hands_each_value_to_its_dataclass():
    config = configure("agq", wbits=3, groupsize=16, batch_size=2, act_order=True, agq_weight="c2")
    assert (config.grid.wbits, config.grid.groupsize, config.run.batch_size) == (3, 16, 2)
    assert config.options == AGQConfig(act_order=True, agq_weight="c2")


@pytest.mark.parametrize(
    "algo, values, message",
    [
        ("gptq", {"agq_weight": "c2"}, "--agq-weight is an option of agq; --algo gptq does not take it"),
        ("rtn", {"act_order": True}, "--act-order is an option of agq, gptq; --algo rtn does not take it"),
        ("agq", {"awq_alpha": 0.5}, "--awq-alpha is an option of agq_awq, awq; --algo agq does not take it"),
        ("rtn", {"colour": "red"}, "unknown option 'colour'"),
        ("spqr", {}, "unknown algorithm 'spqr'"),
    ],
)
def test_an_option_the_algorithm_does_not_take_is_one_line(algo, values, message):
    with pytest.raises(UsageError) as err:
        configure(algo, wbits=4, **values)
    assert str(err.value).startswith(message) and len(str(err.value).splitlines()) == 1


def test_shared_settings_go_with_every_algorithm():
    for name in registry.names():
        config = configure(name, wbits=4, clip_norm=2.0, expert_chunk=2, min_tokens=3)
        assert (config.grid.clip_norm, config.run.expert_chunk, config.run.min_tokens) == (2.0, 2, 3)


def test_flag_groups_list_a_base_before_its_subclass_and_skip_empty_ones():
    titles = [title for title, _ in option_groups()]
    assert titles == ["grid", "run", "options of agq, gptq", "options of agq", "options of agq_awq, awq"]


def test_an_option_declared_twice_is_refused():
    @dataclass(frozen=True)
    class Clashing:
        damp: float = option(0.1, help="a second damp")

    algorithms = {**registry._load_all(), "clash": Algorithm("clash", Clashing, lambda *a: None, True)}
    with pytest.raises(ValueError, match="option 'damp' is declared by two dataclasses"):
        registry._check_one_field_per_option(algorithms)
