"""Half-precision models whose routers transformers keeps in float32 (DeepSeek V2/V3).

Quantization computes in float32 or float64 and writes every weight back in its own dtype:
a bf16 expert stays bf16 and lands on its grid, a float32 router stays float32.
"""

from __future__ import annotations

import pytest
import torch

from moequant.models import adapt
from moequant.models.synthetic import tiny_model
from moequant.quant.registry import configure, get
from moequant.quant.targets import model_targets


@pytest.mark.parametrize("algo", ["rtn", "gptq", "agq", "awq"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["deepseek_v3", "qwen2_moe"])
def test_every_weight_keeps_its_dtype_and_lands_on_its_grid(layout: str, dtype: torch.dtype, algo: str) -> None:
    model = tiny_model(layout, seed=1, dtype=dtype)
    dtypes = {name: t.dtype for name, t in model.state_dict().items()}
    if layout == "deepseek_v3":
        assert dtypes["model.layers.1.mlp.gate.weight"] == torch.float32
    calib = torch.randint(3, 90, (4, 16), generator=torch.Generator().manual_seed(0))
    get(algo).quantize(model, calib, configure(algo, wbits=3, device="cpu", quantize_router=True))
    assert {name: t.dtype for name, t in model.state_dict().items()} == dtypes
    for address, target in model_targets(adapt(model), quantize_router=True).items():
        weight = target.read()
        levels = max(len(row.unique()) for row in weight.reshape(-1, weight.shape[-1]))
        assert levels <= 2**3, f"{address}: a row holds {levels} distinct values, more than a 3-bit grid has"
    with torch.no_grad():
        assert model(input_ids=calib).logits.isfinite().all()
