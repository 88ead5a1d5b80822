"""The layer-streaming driver hands every layer what the model's own forward hands it."""

import torch

from moequant.models.synthetic import tiny_any_model
from moequant.quant.driver import layer_kinds, stream_quantize
from moequant.quant.registry import configure


def test_each_layer_kind_gets_its_own_mask():
    """Sliding-window and full-attention layers receive different masks; layer 0's must not be reused."""
    model = tiny_any_model("mimo_v2_flash")
    from moequant.models import adapt

    kinds = layer_kinds(adapt(model))
    assert len(set(kinds)) > 1, kinds
    ids = torch.randint(3, 96, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(ids, output_hidden_states=True, use_cache=False).hidden_states
    seen = []

    def record(ctx):
        seen.append(torch.cat(ctx.outputs()))

    stream_quantize(model, ids, configure("rtn", wbits=4, device="cpu", batch_size=2), record)
    for index, hidden in enumerate(seen[:-1]):
        torch.testing.assert_close(hidden, expected[index + 1], rtol=1e-5, atol=1e-5)
