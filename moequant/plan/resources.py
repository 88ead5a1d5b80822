"""Threads, memory, runtime and GPUs each job asks for.

Defaults fit the demo on a laptop; a config's `resources` section overrides them per stage
and key, so a cluster run scales memory and runtime per model without touching the rules.
"""

from __future__ import annotations

from moequant.plan.config import Config

STAGE_DEFAULTS = {
    "build_demo": {"threads": 2, "mem_mb": 4000, "runtime": 60, "gpu": 0},
    "calibrate": {"threads": 1, "mem_mb": 4000, "runtime": 60, "gpu": 1},
    "rotate": {"threads": 1, "mem_mb": 4000, "runtime": 30, "gpu": 1},
    "quantize": {"threads": 1, "mem_mb": 4000, "runtime": 120, "gpu": 1},
    "eval_ppl": {"threads": 1, "mem_mb": 4000, "runtime": 60, "gpu": 1},
    "make_tasks": {"threads": 1, "mem_mb": 2000, "runtime": 10, "gpu": 0},
    "eval_tasks": {"threads": 1, "mem_mb": 4000, "runtime": 120, "gpu": 1},
    "tables": {"threads": 1, "mem_mb": 2000, "runtime": 10, "gpu": 0},
}


class Resources:
    def __init__(self, config: Config) -> None:
        self.config = config

    def stage(self, name: str, key: str) -> int:
        return self.config["resources"].get(name, {}).get(key, STAGE_DEFAULTS[name][key])

    def gpus(self, name: str, model: str) -> int:
        """A GPU stage of a model given several GPUs (`models.<name>.gpus`) asks for all of them."""
        base = self.evaluate("gpu") if name == "evaluate" else self.stage(name, "gpu")
        return max(base, self.config["models"][model].get("gpus", 1))

    def evaluate(self, key: str) -> int:
        """The combined evaluation job holds both stages' work: unless configured itself, the
        larger footprint and the summed runtime."""
        combine = sum if key == "runtime" else max
        both = combine(self.stage(name, key) for name in ("eval_ppl", "eval_tasks"))
        return self.config["resources"].get("evaluate", {}).get(key, both)
