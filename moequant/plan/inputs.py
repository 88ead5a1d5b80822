"""What each stage reads, named the two ways the workflow needs it.

A stage's command line names its model and data (`--model`, `--include-path`); Snakemake
tracks the same things as input files, so an edit of one reruns the stage. The two differ
where Snakemake cannot track a thing: a Hub id is no file, and a file inside the built demo
model is covered by the demo model's folder. Both views are decided side by side here.
"""

from __future__ import annotations

from pathlib import Path

from moequant.plan.config import Config, datasets, is_demo, is_fp, tasks
from moequant.plan.layout import Layout, uses_demo_data


def local_text_files(source: str) -> list[str]:
    """The local text file a `text:PATH` source reads, unless it lies in the demo's data folder."""
    if source.startswith("text:") and not uses_demo_data(source):
        return [source[len("text:") :]]
    return []


class Inputs:
    def __init__(self, config: Config, layout: Layout) -> None:
        self.config = config
        self.layout = layout

    # ---- as the command line names them

    def base_model(self, model: str) -> str:
        """What `--model` names for the original fp model: the built demo or the HF id/dir."""
        return self.layout.model_dir(model) if is_demo(self.config, model) else self.config["models"][model]["hf"]

    def model_under_test(self, model: str, method: str, bits: int | str) -> str:
        if is_fp(self.config, method):
            return self.base_model(model)
        return self.layout.quant_dir(model, method, bits)

    def quantize_source(self, model: str, method: str) -> str:
        """A rotating method quantizes the rotated model, every other one the original."""
        if self.config["methods"][method]["rotation"]:
            return self.layout.rotated_dir(model)
        return self.base_model(model)

    def task_folder(self, model: str) -> str | None:
        """The lm-eval task folder (`include: demo` is the demo model's own), or None for none."""
        folder = tasks(self.config).get("include")
        return self.layout.tasks_dir(model) if folder == "demo" else folder

    # ---- as Snakemake tracks them

    def base_model_files(self, model: str) -> list[str]:
        """A Hub id is no file; a model directory is, when it exists."""
        if is_demo(self.config, model):
            return [self.layout.model_dir(model)]
        hf = self.config["models"][model]["hf"]
        return [hf] if Path(hf).exists() else []

    def model_under_test_files(self, model: str, method: str, bits: int | str) -> list[str]:
        if is_fp(self.config, method):
            return self.base_model_files(model)
        return [self.layout.quant_dir(model, method, bits)]

    def calibrate(self, model: str, calib: str) -> list[str]:
        source = self.config["calibration"][calib]["source"]
        return self.base_model_files(model) + local_text_files(source)

    def quantize(self, model: str, method: str) -> list[str]:
        entry = self.config["methods"][method]
        files = [self.layout.rotated_dir(model)] if entry["rotation"] else self.base_model_files(model)
        if entry["calibration"] is not None:
            files.append(self.layout.calib_file(model, entry["calibration"]))
        return files

    def eval_ppl(self, model: str, method: str, bits: int | str) -> list[str]:
        """The model under test, every local dataset and, for KL, the fp reference."""
        files = self.model_under_test_files(model, method, bits)
        for source in datasets(self.config).values():
            files += local_text_files(source)
        if self.config["evaluation"]["ppl"]["kl"] and not is_fp(self.config, method):
            files += self.base_model_files(model)
        return sorted(set(files))

    def eval_tasks(self, model: str, method: str, bits: int | str) -> list[str]:
        folder = self.task_folder(model)
        return self.model_under_test_files(model, method, bits) + ([folder] if folder else [])

    def evaluate(self, model: str, method: str, bits: int | str) -> list[str]:
        return sorted(set(self.eval_ppl(model, method, bits) + self.eval_tasks(model, method, bits)))
