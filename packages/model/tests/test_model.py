"""Behaviour of `MultiTaskViLBERT`: task tokens, masks, one head per forward, outputs, autocast."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from twelve.model.config import ViLBERTConfig
from twelve.model.errors import UnknownTaskError
from twelve.model.inputs import ViLBERTInputs
from twelve.model.model import MultiTaskViLBERT

HERE = Path(__file__).parent


def _model(config: ViLBERTConfig, randomized: Callable[..., None]) -> MultiTaskViLBERT:
    model = MultiTaskViLBERT(config).eval()
    randomized(model)
    return model


def test_12in1_base_state_dict_has_the_original_keys_and_shapes_in_order() -> None:
    expected = []
    for line in (HERE / "data" / "original-state-dict.txt").read_text().splitlines():
        name, shape = line.split()
        expected.append((name, tuple(int(n) for n in shape.strip("[]").split(","))))
    with torch.device("meta"):
        model = MultiTaskViLBERT(ViLBERTConfig.preset("12in1-base"))
    actual = [(name, tuple(value.shape)) for name, value in model.state_dict().items()]
    assert len(actual) == 560
    assert actual == expected
    assert model.num_parameters() == 268_028_859
    # the dead q_dense weights: 6 blocks × (1024·1024 + 1024 + 768·1024 + 768)
    assert model.num_parameters() - model.num_parameters(trainable_only=True) == 11_020_800
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_task_token_sits_after_cls_without_position_or_segment_embedding(
    tiny_config: ViLBERTConfig, randomized: Callable[..., None]
) -> None:
    model = _model(tiny_config, randomized)
    embeddings = model.bert.embeddings
    ids = torch.tensor([[101 % 60, 7, 8, 9]])
    types = torch.zeros_like(ids)
    with torch.no_grad():
        with_task = embeddings(ids, types, torch.tensor([[9]]))
        without = embeddings(ids, types, None)
        assert with_task.shape == (1, 5, tiny_config.text.hidden_size)
        torch.testing.assert_close(with_task[:, [0, 2, 3, 4]], without)
        task_vector = embeddings.LayerNorm(embeddings.task_embeddings.weight[9])
        torch.testing.assert_close(with_task[0, 1], task_vector)


def test_each_task_uses_its_task_token(
    tiny_config: ViLBERTConfig,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    model = _model(tiny_config, randomized)
    inputs = make_inputs(tiny_config)
    with torch.no_grad():
        vqa = model(inputs, "vqa").logits
        vg_qa = model(inputs, "vg_qa").logits  # same head, different task token (1 vs 2)
    assert vqa.shape == vg_qa.shape == (4, 3129)
    assert not torch.allclose(vqa, vg_qa)


def test_padding_changes_nothing(
    tiny_config: ViLBERTConfig,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    model = _model(tiny_config, randomized)
    inputs = make_inputs(tiny_config, batch=2, length=6, regions=5)
    padded = ViLBERTInputs(
        input_ids=torch.cat([inputs.input_ids, torch.zeros(2, 3, dtype=torch.long)], dim=1),
        token_type_ids=torch.zeros(2, 9, dtype=torch.long),
        text_mask=torch.cat([inputs.text_mask, torch.zeros(2, 3, dtype=torch.long)], dim=1),
        region_features=torch.cat([inputs.region_features, torch.randn(2, 4, 24)], dim=1),
        region_locations=torch.cat([inputs.region_locations, torch.rand(2, 4, 5)], dim=1),
        region_mask=torch.cat([inputs.region_mask, torch.zeros(2, 4, dtype=torch.long)], dim=1),
    )
    with torch.no_grad():
        for task in ("vqa", "retrieval_coco", "snli_ve", "nlvr2"):
            torch.testing.assert_close(
                model(inputs, task).logits, model(padded, task).logits, atol=1e-4, rtol=1e-4
            )
        regions = model(inputs, "refcoco").logits
        regions_padded = model(padded, "refcoco").logits
    torch.testing.assert_close(regions, regions_padded[:, :5], atol=1e-4, rtol=1e-4)
    assert regions_padded.shape == (2, 9)
    # −10000 added on padded regions
    assert (regions_padded[:, 5:] < -9000).all()
    assert (regions[1, 3:] < -9000).all()


def test_only_the_requested_head_runs(
    tiny_config: ViLBERTConfig,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    model = _model(tiny_config, randomized)
    calls: list[str] = []
    watched = [*tiny_config.heads, "cls", "linguisic_logit", "bert.t_pooler", "bert.v_pooler"]
    for name in watched:
        module = model.get_submodule(name)
        module.register_forward_pre_hook(lambda _m, _a, name=name: calls.append(name))
    for module in model.cls.modules():
        module.register_forward_pre_hook(lambda _m, _a: calls.append("cls"))
    inputs = make_inputs(tiny_config)
    expected = {
        "vqa": ["bert.t_pooler", "bert.v_pooler", "vil_prediction"],
        "gqa": ["bert.t_pooler", "bert.v_pooler", "vil_prediction_gqa"],
        "retrieval_flickr30k": ["bert.t_pooler", "bert.v_pooler", "vil_logit"],
        "nlvr2": ["bert.t_pooler", "bert.v_pooler", "vil_binary_prediction"],
        "snli_ve": ["bert.t_pooler", "bert.v_pooler", "vil_tri_prediction"],
        "guesswhat": ["vision_logit"],
    }
    with torch.no_grad():
        for task, heads in expected.items():
            calls.clear()
            model(inputs, task)
            assert calls == heads, task


def test_region_tasks_skip_the_text_layers_after_the_last_co_attention(
    tiny_config: ViLBERTConfig,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    model = _model(tiny_config, randomized)
    ran: list[int] = []
    for index, layer in enumerate(model.bert.encoder.layer):
        layer.register_forward_pre_hook(lambda _m, _a, index=index: ran.append(index))
    inputs = make_inputs(tiny_config)
    with torch.no_grad():
        model(inputs, "refcoco")
        # tiny schedule: T0 T1 → C0 → (T2, V0) → C1 → V1 V2 → T3; T3 only feeds text outputs
        assert ran == [0, 1, 2]
        ran.clear()
        model(inputs, "refcoco", output_hidden_states=True)
        assert ran == [0, 1, 2, 3]


def test_pair_head_joins_consecutive_rows(
    tiny_config: ViLBERTConfig,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    model = _model(tiny_config, randomized)
    inputs = make_inputs(tiny_config, batch=4)
    with torch.no_grad():
        out = model(inputs, "nlvr2", output_pooled=True)
        assert out.logits.shape == (2, 2)
        assert out.pooled is not None
        joined = out.pooled.reshape(2, 2 * tiny_config.pooled_size)
        torch.testing.assert_close(out.logits, model.vil_binary_prediction.logit_fc(joined))
        odd = make_inputs(tiny_config, batch=3)
        with pytest.raises(ValueError, match="even number of rows"):
            model(odd, "nlvr2")


def test_outputs_on_request(
    tiny_config: ViLBERTConfig,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    model = _model(tiny_config, randomized)
    inputs = make_inputs(tiny_config, batch=2, length=7, regions=6)
    with torch.no_grad():
        plain = model(inputs, "retrieval_coco")
        full = model(inputs, "retrieval_coco", output_pooled=True, output_hidden_states=True)
    assert plain.task == "retrieval_coco"
    assert plain.logits.shape == (2,)
    assert plain.pooled is plain.text_states is plain.vision_states is plain.attentions is None
    assert full.pooled is not None
    assert full.pooled.shape == (2, tiny_config.pooled_size)
    assert full.text_states is not None
    assert full.text_states.shape == (2, 8, tiny_config.text.hidden_size)
    assert full.vision_states is not None
    assert full.vision_states.shape == (2, 6, tiny_config.vision.hidden_size)


def test_unknown_task_is_a_clear_error(
    tiny_config: ViLBERTConfig, make_inputs: Callable[..., ViLBERTInputs]
) -> None:
    model = MultiTaskViLBERT(tiny_config).eval()
    with pytest.raises(UnknownTaskError, match=r"unknown task 'vqa2'.*'vqa'"):
        model(make_inputs(tiny_config), "vqa2")


def test_inputs_are_checked(tiny_config: ViLBERTConfig, make_inputs: Callable[..., ViLBERTInputs]):
    inputs = make_inputs(tiny_config, batch=2)
    with pytest.raises(ValueError, match="text_mask has shape"):
        replace(inputs, text_mask=inputs.text_mask[:, :3])
    with pytest.raises(ValueError, match="region_locations has shape"):
        replace(inputs, region_locations=inputs.region_locations[..., :4])
    with pytest.raises(ValueError, match="region_features has 1 rows"):
        replace(inputs, region_features=inputs.region_features[:1])


def test_pretraining_outputs(
    tiny_config: ViLBERTConfig,
    make_inputs: Callable[..., ViLBERTInputs],
    randomized: Callable[..., None],
) -> None:
    model = _model(tiny_config, randomized)
    inputs = make_inputs(tiny_config, batch=2, length=7, regions=6)
    with torch.no_grad():
        out = model.forward_pretraining(inputs)
        tokened = model.forward_pretraining(inputs, task="vqa")
    assert out.masked_lm_logits.shape == (2, 7, tiny_config.text.vocab_size)
    assert tokened.masked_lm_logits.shape == (2, 8, tiny_config.text.vocab_size)
    assert out.image_logits.shape == (2, 6, 1601)
    assert out.alignment_logits.shape == (2, 2)


def test_training_step_reaches_every_used_parameter(
    tiny_config: ViLBERTConfig, make_inputs: Callable[..., ViLBERTInputs]
) -> None:
    model = MultiTaskViLBERT(tiny_config).train()
    inputs = make_inputs(tiny_config)
    model(inputs, "vqa").logits.sum().backward()
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert "bert.encoder.layer.3.attention.self.qkv.weight" in with_grad
    assert "bert.encoder.c_layer.1.biattention.text_qkv.weight" in with_grad
    assert not any("q_dense" in name for name in with_grad)
    assert not any(name.startswith(("vil_logit", "cls.", "vision_logit")) for name in with_grad)


@pytest.mark.parametrize("task", ["vqa", "refcoco"])
def test_bf16_autocast_runs_and_stays_close(
    task: str,
    tiny_config: ViLBERTConfig,
    make_inputs: Callable[..., ViLBERTInputs],
) -> None:
    model = MultiTaskViLBERT(tiny_config).eval()
    inputs = make_inputs(tiny_config)
    with torch.no_grad():
        reference = model(inputs, task).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(inputs, task).logits
    assert torch.isfinite(low).all()
    finite = reference > -1000
    torch.testing.assert_close(low.float()[finite], reference[finite], atol=0.1, rtol=0.05)


def test_bf16_autocast_backward(
    tiny_config: ViLBERTConfig, make_inputs: Callable[..., ViLBERTInputs]
) -> None:
    model = MultiTaskViLBERT(tiny_config).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(make_inputs(tiny_config), "vqa").logits.float().square().mean()
    loss.backward()
    grad = model.bert.encoder.c_layer[0].biattention.vision_qkv.weight.grad
    assert grad is not None
    assert grad.dtype == torch.float32
    assert torch.isfinite(grad).all()


def test_initialisation_follows_the_original() -> None:
    torch.manual_seed(0)
    model = MultiTaskViLBERT(ViLBERTConfig.preset("tiny"))
    qkv = model.bert.encoder.v_layer[0].attention.self.qkv
    assert abs(qkv.weight.std().item() - 0.02) < 0.002
    assert torch.count_nonzero(qkv.bias) == 0
    norm = model.bert.encoder.layer[0].output.LayerNorm
    assert torch.equal(norm.weight, torch.ones_like(norm.weight))
    assert torch.count_nonzero(model.cls.predictions.bias) == 0
    assert abs(model.bert.embeddings.word_embeddings.weight[0].std().item() - 0.02) < 0.01
