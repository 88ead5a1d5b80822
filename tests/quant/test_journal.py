"""A quantize interrupted after layer k resumes at layer k+1 and ends with the same checkpoint."""

import pytest
import torch

from moequant.quant.driver import stream_quantize
from moequant.quant.journal import JOURNAL, LayerJournal
from moequant.quant.registry import configure
from moequant.quant.sequential import GPTQLayer
from tests.quant.helpers import calib_ids

CONFIG = configure("agq", wbits=3, batch_size=2, act_order=True)


class Interrupted(Exception):
    pass


def interrupt_at(index: int, layer: GPTQLayer):
    def quantize_layer(ctx):
        if ctx.layer.index == index:
            raise Interrupted
        layer(ctx)

    return quantize_layer


def same_result(a, b, model_a, model_b):
    assert a.weights.keys() == b.weights.keys()
    for address, packed in a.weights.items():
        other = b.weights[address]
        assert torch.equal(packed.codes, other.codes) and torch.equal(packed.scale, other.scale), address
    assert [(r.layer, r.module, r.expert, r.tokens) for r in a.rows] == [(r.layer, r.module, r.expert, r.tokens) for r in b.rows]
    for (name, x), (_, y) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("stop", [1, 2])
def test_resumed_run_equals_the_uninterrupted_one(make_tiny, tmp_path, stop, capfd):
    calib = calib_ids(4, 16)
    whole_model = make_tiny("deepseek_v3")
    whole = stream_quantize(whole_model, calib, CONFIG, GPTQLayer(agq=True))

    model = make_tiny("deepseek_v3")
    journal = LayerJournal(tmp_path / "ckpt.journal", "run-1")
    with pytest.raises(Interrupted):
        stream_quantize(model, calib, CONFIG, interrupt_at(stop, GPTQLayer(agq=True)), LayerJournal(tmp_path / "ckpt.journal", "run-1"))
    fresh = make_tiny("deepseek_v3")
    resumed = stream_quantize(fresh, calib, CONFIG, GPTQLayer(agq=True), journal)
    assert f"resuming after layer {stop}/3" in capfd.readouterr().err
    same_result(whole, resumed, whole_model, fresh)


def test_a_damaged_journal_file_is_never_trusted(make_tiny, tmp_path, capfd):
    calib = calib_ids(4, 16)
    whole_model = make_tiny("deepseek_v3")
    whole = stream_quantize(whole_model, calib, CONFIG, GPTQLayer(agq=True))
    directory = tmp_path / "ckpt.journal"
    with pytest.raises(Interrupted):
        stream_quantize(make_tiny("deepseek_v3"), calib, CONFIG, interrupt_at(2, GPTQLayer(agq=True)), LayerJournal(directory, "run-1"))
    first = directory / "layer-00000.safetensors"
    first.write_bytes(first.read_bytes()[:-7])
    fresh = make_tiny("deepseek_v3")
    resumed = stream_quantize(fresh, calib, CONFIG, GPTQLayer(agq=True), LayerJournal(directory, "run-1"))
    err = capfd.readouterr().err
    assert "layer 1 does not match its hash" in err and "resuming" not in err
    same_result(whole, resumed, whole_model, fresh)


def test_a_journal_of_another_run_is_ignored(make_tiny, tmp_path, capfd):
    calib = calib_ids(4, 16)
    directory = tmp_path / "ckpt.journal"
    with pytest.raises(Interrupted):
        stream_quantize(make_tiny("deepseek_v3"), calib, CONFIG, interrupt_at(2, GPTQLayer(agq=True)), LayerJournal(directory, "run-1"))
    assert (directory / JOURNAL).is_file()
    stream_quantize(make_tiny("deepseek_v3"), calib, CONFIG, GPTQLayer(agq=True), LayerJournal(directory, "run-2"))
    assert "belongs to another run" in capfd.readouterr().err
