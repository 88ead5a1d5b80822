import pytest
import torch

from moequant.errors import UsageError
from moequant.memory import MemoryPlan, available_bytes, module_bytes


def test_a_plan_larger_than_the_host_fails_in_one_line_with_its_numbers():
    plan = MemoryPlan("quantize", torch.device("cpu"), host={"model": 2**50}, on_device={"Hessians": 2**30})
    with pytest.raises(UsageError, match=r"quantize needs about 1048577.00 GiB of host memory \(model 1048576.00 GiB, Hessians 1.00 GiB\) but .* GiB is available"):
        plan.check()


def test_a_plan_that_fits_passes_and_reports_its_parts():
    plan = MemoryPlan("quantize", torch.device("cpu"), host={"model": 1024}, on_device={"activations": 2048})
    plan.check()
    assert available_bytes(torch.device("cpu")) > 0
    report = plan.report()
    assert report["planned"] == {"host": {"model": 1024, "activations": 2048}} and report["peak_device_bytes"] is None


def test_module_bytes_counts_a_meta_skeleton_in_the_load_dtype():
    with torch.device("meta"):
        linear = torch.nn.Linear(8, 4)
    assert module_bytes(linear, torch.bfloat16) == (8 * 4 + 4) * 2
    assert module_bytes(torch.nn.Linear(8, 4)) == (8 * 4 + 4) * 4
