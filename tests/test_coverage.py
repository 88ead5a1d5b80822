"""Every MoE model type of the installed transformers, built tiny and run through every stage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from moequant.coverage import STAGES, check_family, moe_model_types

QUANTIZE = ("rtn", "gptq", "agq")
REQUIRED_QUANTIZING = ("qwen3_5_moe", "deepseek_v3", "glm4_moe", "gpt_oss", "mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "phimoe")
REQUIRED_ROTATING = ("deepseek_v2", "deepseek_v3", "glm4_moe", "gpt_oss", "mixtral", "qwen2_moe", "qwen3_5_moe", "qwen3_moe", "olmoe", "phimoe")


@pytest.fixture(scope="module")
def reports():
    return {t: check_family(t) for t in moe_model_types()}


@pytest.mark.slow
def test_families_quantize_and_rotate_at_scale(reports):
    quantizing = [t for t, r in reports.items() if all(r.passed(s) for s in QUANTIZE)]
    rotating = [t for t, r in reports.items() if r.passed("rotate")]
    print(f"{len(reports)} MoE model types; quantizing {len(quantizing)}: {quantizing}; rotating {len(rotating)}: {rotating}")
    assert len(quantizing) >= 25 and len(rotating) >= 15
    for model_type in REQUIRED_QUANTIZING:
        assert all(reports[model_type].passed(s) for s in (*QUANTIZE, "sigma", "ebss")), reports[model_type].outcomes
    for model_type in REQUIRED_ROTATING:
        assert reports[model_type].passed("rotate"), reports[model_type].outcomes
    failing = {t for t, r in reports.items() if any(o.status == "failed" for o in r.outcomes.values())}
    assert not failing, {t: reports[t].outcomes for t in failing}


@pytest.mark.slow
def test_every_outcome_is_one_line_with_a_reason(reports):
    for report in reports.values():
        assert set(report.outcomes) <= set(STAGES)
        for outcome in report.outcomes.values():
            assert outcome.status in ("pass", "refused", "failed")
            assert "\n" not in outcome.detail and (outcome.status == "pass") == (outcome.detail == "")


def test_a_layernorm_family_rotates_exactly():
    """PhiMoE's norms subtract the mean and add a bias: rotation centres the stream first."""
    report = check_family("phimoe")
    assert all(report.passed(s) for s in (*QUANTIZE, "rotate")), report.outcomes


def test_a_linear_attention_family_takes_its_mixer_roles_from_shapes_and_rotates_exactly():
    """Qwen3-Next's gated delta-net projections read or write the hidden width; its norms are (1 + weight)."""
    report = check_family("qwen3_next")
    assert all(report.passed(s) for s in (*QUANTIZE, "rotate")), report.outcomes


def test_linears_of_unknown_role_get_plain_gptq_and_do_not_block_rotation_when_inner(capfd):
    """DeepSeek-V3.2's indexer query projection reads a latent, not the stream: plain GPTQ, rotation unaffected."""
    report = check_family("deepseek_v32")
    assert all(report.passed(s) for s in (*QUANTIZE, "rotate")), report.outcomes
    assert "plain GPTQ" in capfd.readouterr().err


@pytest.mark.slow
def test_the_docs_table_is_the_measured_one(reports):
    """docs/families.md must be regenerated (`moequant families --out docs/families.md`) when outcomes change."""
    import transformers

    text = (Path(__file__).parents[1] / "docs" / "families.md").read_text()
    version = re.search(r"MoE families of transformers (\S+):", text).group(1)
    if version != transformers.__version__:
        pytest.skip(f"docs/families.md is for transformers {version}, {transformers.__version__} is installed")
    documented = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in reports:
            documented[cells[0]] = [c.split(":")[0] for c in cells[1:]]
    measured = {t: [r.outcomes[s].status if s in r.outcomes else "—" for s in STAGES] for t, r in reports.items()}
    assert documented == measured


def test_an_unknown_model_type_is_one_line(capsys):
    from moequant.cli import main

    assert main(["families", "--model-type", "nonsense"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'nonsense' is not a MoE model type" in err and "mixtral" in err and err.count("\n") == 0
