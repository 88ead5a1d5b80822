"""Job sizes: per-stage defaults, config overrides, and the combined evaluation job."""

from __future__ import annotations

from moequant.plan.resources import Resources


def test_a_configured_key_wins_and_the_rest_default() -> None:
    resources = Resources({"resources": {"quantize": {"mem_mb": 1000}}})
    assert resources.stage("quantize", "mem_mb") == 1000
    assert resources.stage("quantize", "runtime") == 120
    assert resources.stage("build_demo", "threads") == 2


def test_evaluate_sums_runtimes_and_takes_the_larger_footprint_unless_configured() -> None:
    config = {"resources": {"eval_ppl": {"runtime": 240, "mem_mb": 200000}, "eval_tasks": {"runtime": 720, "threads": 8}}}
    resources = Resources(config)
    assert (resources.evaluate("runtime"), resources.evaluate("mem_mb"), resources.evaluate("threads")) == (960, 200000, 8)
    config["resources"]["evaluate"] = {"runtime": 600}
    assert resources.evaluate("runtime") == 600 and resources.evaluate("gpu") == 1
