"""The command-line arguments of each stage, as one string per job.

The strings are the rules' params, and Snakemake reruns a job whose params changed: so a
config change reruns exactly the stages whose arguments it changes, and a change of the
text here, even of flag order, reruns every job of that stage. Values a shell could split
(paths, sources) are quoted.
"""

from __future__ import annotations

import shlex
from typing import Any

from moequant.plan.config import Config, datasets, is_fp, tasks
from moequant.plan.inputs import Inputs
from moequant.plan.layout import Layout

TASK_OPTIONS_PPL_ALSO_HAS = ("batch_size", "seed")
"""Task options whose flags `evaluate` spells with a `tasks-` prefix: perplexity has them too."""


def option_flags(options: dict[str, Any]) -> list[str]:
    """Config options become CLI flags: {groupsize: 128, act_order: true} → --groupsize 128 --act-order."""
    flags = []
    for key in sorted(options):
        value = options[key]
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            flags.append(flag)
        elif value is not False:
            flags.extend([flag, shlex.quote(str(value))])
    return flags


class Arguments:
    def __init__(self, config: Config, layout: Layout, inputs: Inputs) -> None:
        self.config = config
        self.layout = layout
        self.inputs = inputs

    def _remote_code(self, model: str) -> list[str]:
        return ["--trust-remote-code"] if self.config["models"][model].get("trust_remote_code") else []

    def demo(self, model: str) -> str:
        demo = self.config["models"][model]["demo"]
        args = [f"--family {demo['family']}", f"--seed {demo['seed']}"]
        if "steps" in demo:
            args.append(f"--steps {demo['steps']}")
        if demo["tiny"]:
            args.append("--tiny")
        return " ".join(args + ["--quiet"])

    def calibrate(self, model: str, calib: str) -> str:
        entry = self.config["calibration"][calib]
        args = [
            f"--source {shlex.quote(self.layout.resolve_source(entry['source'], model))}",
            f"--nsamples {entry['nsamples']}",
            f"--seqlen {entry['seqlen']}",
            f"--seed {entry['seed']}",
        ]
        args += [f"--{key.replace('_', '-')} {entry[key]}" for key in ("tau", "width", "no_repeat_ngram") if key in entry]
        return " ".join(args + self._spread(model) + self._remote_code(model))

    def _spread(self, model: str) -> list[str]:
        """A model given several GPUs is spread over them (`--device all`)."""
        return ["--device all"] if self.config["models"][model].get("gpus", 1) > 1 else []

    def _stream(self, model: str) -> list[str]:
        return ["--stream"] if self.config["models"][model].get("stream") else []

    def rotate(self, model: str) -> str:
        seed = f"--seed {self.config['models'][model]['rotation_seed']}"
        return " ".join([seed, *self._stream(model), *self._remote_code(model)])

    def quantize(self, model: str, method: str, bits: int | str) -> str:
        entry = self.config["methods"][method]
        args = [f"--algo {entry['algorithm']}", f"--wbits {bits}"]
        if entry["calibration"] is not None:
            args.append(f"--calib {self.layout.calib_file(model, entry['calibration'])}")
        return " ".join(args + option_flags(entry["options"]) + self._stream(model) + self._remote_code(model))

    def eval_ppl(self, model: str, method: str) -> str:
        """Every configured dataset in one job: the model (and the fp reference) is loaded once."""
        ppl = self.config["evaluation"]["ppl"]
        args = [
            f"--dataset {shlex.quote(f'{name}={self.layout.resolve_source(source, model)}')}"
            for name, source in datasets(self.config).items()
        ]
        args += [f"--seqlen {ppl['seqlen']}", f"--batch-size {ppl['batch_size']}"]
        if ppl["max_windows"] is not None:
            args.append(f"--max-windows {ppl['max_windows']}")
        if ppl["kl"] and not is_fp(self.config, method):
            args.append(f"--reference {self.inputs.base_model(model)}")
        return " ".join(args + self._spread(model) + self._remote_code(model))

    def eval_ppl_out(self, model: str, method: str, bits: int | str) -> str:
        """`--out` of eval-ppl: one file per dataset, `{dataset}` filled in by the verb."""
        return shlex.quote(self.layout.ppl_file(model, method, bits, "{dataset}"))

    def _task_flags(self, model: str, prefix: str = "") -> list[str]:
        config = tasks(self.config)
        args = [f"--tasks {','.join(config['names'])}"]
        folder = self.inputs.task_folder(model)
        if folder:
            args.append(f"--include-path {folder}")
        options = {
            (prefix + key if key in TASK_OPTIONS_PPL_ALSO_HAS else key): value
            for key, value in config.get("options", {}).items()
        }
        return args + option_flags(options)

    def eval_tasks(self, model: str) -> str:
        return " ".join(self._task_flags(model) + self._spread(model) + self._remote_code(model))

    def evaluate(self, model: str, method: str, bits: int | str) -> str:
        """eval-ppl's flags (remote-code flag included) plus the task flags, as `moequant evaluate` spells them."""
        args = [
            self.eval_ppl(model, method),
            f"--ppl-out {self.eval_ppl_out(model, method, bits)}",
            *self._task_flags(model, prefix="tasks_"),
            f"--tasks-out {shlex.quote(self.layout.tasks_file(model, method, bits))}",
        ]
        return " ".join(args)
