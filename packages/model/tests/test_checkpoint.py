"""Original `.bin` checkpoints (made here with torch.save) and the native safetensors directory."""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from twelve.model.checkpoint import (
    load_original,
    load_original_weights,
    load_pretrained,
    save_pretrained,
)
from twelve.model.compat import VILBertForVLTasks
from twelve.model.config import ViLBERTConfig
from twelve.model.errors import CheckpointError, ConfigError
from twelve.model.inputs import ViLBERTInputs
from twelve.model.model import MultiTaskViLBERT

HEAD_PREFIXES = (
    "vil_prediction.",
    "vil_prediction_gqa.",
    "vil_binary_prediction.",
    "vil_logit.",
    "vil_tri_prediction.",
    "vision_logit.",
    "linguisic_logit.",
)


@pytest.fixture
def original_state(
    tiny_config: ViLBERTConfig, randomized: Callable[..., None]
) -> dict[str, torch.Tensor]:
    """An original-format multi-task state dict (all 10 heads, tied decoder, q_dense)."""
    model = MultiTaskViLBERT(tiny_config)
    randomized(model)
    return {key: value.clone() for key, value in model.state_dict().items()}


def _write(tmp_path: Path, state: dict[str, torch.Tensor], name: str = "model.bin") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def _write_config(tmp_path: Path, original: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(original))
    return path


def _outputs(model: MultiTaskViLBERT, inputs: ViLBERTInputs) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return {task: model(inputs, task).logits for task in ("vqa", "refcoco", "nlvr2")}


def test_original_checkpoint_loads_strictly_and_infers_task_tokens(
    tmp_path: Path,
    tiny_original: dict[str, Any],
    original_state: dict[str, torch.Tensor],
    make_inputs: Callable[..., ViLBERTInputs],
) -> None:
    weights = _write(tmp_path, original_state)
    config_path = _write_config(tmp_path, {**tiny_original, "task_specific_tokens": False})
    model, report = load_original(weights, config_path)
    assert model.config.task_tokens  # from the checkpoint's task_embeddings
    assert not model.training
    assert report.kind == "multi-task"
    assert report.missing == report.unexpected == ()
    assert report.ignored == ("cls.predictions.decoder.weight",)
    assert report.loaded == len(original_state) - 1
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, original_state[key], rtol=0, atol=0)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_module_prefix_and_gamma_beta_names_are_accepted(
    tmp_path: Path, tiny_config: ViLBERTConfig, original_state: dict[str, torch.Tensor]
) -> None:
    renamed = {}
    for key, value in original_state.items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        )
        renamed[f"module.{key}"] = value
    model, report = load_original(_write(tmp_path, renamed), tiny_config)
    assert report.missing == report.unexpected == ()
    torch.testing.assert_close(
        model.bert.embeddings.LayerNorm.weight,
        original_state["bert.embeddings.LayerNorm.weight"],
    )


def test_checkpoint_without_q_dense_or_decoder_still_loads(
    tmp_path: Path, tiny_config: ViLBERTConfig, original_state: dict[str, torch.Tensor]
) -> None:
    lean = {
        k: v
        for k, v in original_state.items()
        if k != "cls.predictions.decoder.weight" and "q_dense" not in k
    }
    model, report = load_original(_write(tmp_path, lean), tiny_config)
    assert report.ignored == ()
    assert len(report.missing) == 2 * 4  # q_dense1/2 weight and bias in both blocks
    assert all("q_dense" in key for key in report.missing)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight


def test_pretrained_checkpoint_loads_with_fresh_heads(
    tmp_path: Path,
    tiny_config: ViLBERTConfig,
    original_state: dict[str, torch.Tensor],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pretrained = {
        key: value
        for key, value in original_state.items()
        if not key.startswith(HEAD_PREFIXES) and "task_embeddings" not in key
    }
    with caplog.at_level(logging.INFO, logger="twelve.model.checkpoint"):
        model, report = load_original(_write(tmp_path, pretrained), tiny_config)
    assert report.kind == "pretrained"
    assert "bert.embeddings.task_embeddings.weight" in report.missing
    assert "vil_prediction.logit_fc.3.weight" in report.missing
    assert not any(key.startswith(("bert.encoder", "cls.")) for key in report.missing)
    assert "task heads and task tokens start fresh" in caplog.text
    torch.testing.assert_close(
        model.bert.encoder.layer[0].output.dense.weight,
        pretrained["bert.encoder.layer.0.output.dense.weight"],
    )


def test_multi_task_checkpoint_missing_a_key_fails_by_default(
    tmp_path: Path, tiny_config: ViLBERTConfig, original_state: dict[str, torch.Tensor]
) -> None:
    broken = dict(original_state)
    del broken["bert.encoder.c_layer.1.biattention.key2.bias"]
    del broken["vil_logit.bias"]
    with pytest.raises(CheckpointError, match=r"missing \(2\).*key2\.bias.*vil_logit\.bias"):
        load_original(_write(tmp_path, broken), tiny_config)
    model, report = load_original(_write(tmp_path, broken), tiny_config, strict=False)
    assert set(report.missing) == {
        "bert.encoder.c_layer.1.biattention.key2.bias",
        "vil_logit.bias",
    }
    # the present parts of the packed projection were loaded
    torch.testing.assert_close(
        model.state_dict()["bert.encoder.c_layer.1.biattention.key2.weight"],
        original_state["bert.encoder.c_layer.1.biattention.key2.weight"],
    )


def test_unexpected_key_fails_by_default(
    tmp_path: Path, tiny_config: ViLBERTConfig, original_state: dict[str, torch.Tensor]
) -> None:
    extra = {
        **original_state,
        "bert.encoder.v_layer.0.attention.self.dyLinear_q.weight": torch.ones(2),
    }
    with pytest.raises(CheckpointError, match=r"unexpected \(1\).*dyLinear_q"):
        load_original(_write(tmp_path, extra), tiny_config)
    _, report = load_original(_write(tmp_path, extra), tiny_config, strict=False)
    assert report.unexpected == ("bert.encoder.v_layer.0.attention.self.dyLinear_q.weight",)


def test_wrong_shape_is_a_clear_error(
    tmp_path: Path, tiny_config: ViLBERTConfig, original_state: dict[str, torch.Tensor]
) -> None:
    wrong = {**original_state, "bert.encoder.layer.1.attention.self.value.weight": torch.ones(3, 3)}
    with pytest.raises(
        CheckpointError,
        match=r"layer\.1\.attention\.self\.value\.weight: checkpoint \(3, 3\), model \(32, 32\)",
    ):
        load_original(_write(tmp_path, wrong), tiny_config, strict=False)


def test_unsafe_or_odd_files_are_rejected(tmp_path: Path, tiny_config: ViLBERTConfig) -> None:
    torch.save({"args": argparse.Namespace(lr=1e-4)}, tmp_path / "pickled.bin")
    with pytest.raises(CheckpointError, match=r"pickled\.bin.*weights-only"):
        load_original(tmp_path / "pickled.bin", tiny_config)
    torch.save({"step": 3}, tmp_path / "not_state.bin")
    with pytest.raises(CheckpointError, match=r"entry 'step' is a int"):
        load_original(tmp_path / "not_state.bin", tiny_config)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_original(tmp_path / "absent.bin", tiny_config)


def test_compat_from_pretrained_returns_eval_model_with_the_weights(
    tmp_path: Path,
    tiny_original: dict[str, Any],
    original_state: dict[str, torch.Tensor],
) -> None:
    weights = _write(tmp_path, original_state)
    config_path = _write_config(tmp_path, {**tiny_original, "task_specific_tokens": False})
    model = VILBertForVLTasks.from_pretrained(
        str(weights), config=str(config_path), num_labels=3129
    )
    assert not model.training
    assert model.config.task_tokens
    torch.testing.assert_close(
        model.vil_prediction.logit_fc[3].weight, original_state["vil_prediction.logit_fc.3.weight"]
    )


def test_native_round_trip(
    tmp_path: Path,
    tiny_config: ViLBERTConfig,
    randomized: Callable[..., None],
    make_inputs: Callable[..., ViLBERTInputs],
) -> None:
    model = MultiTaskViLBERT(tiny_config).eval()
    randomized(model)
    target = tmp_path / "models" / "tiny"
    save_pretrained(model, target)
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]
    loaded = load_pretrained(target)
    assert loaded.config == tiny_config
    assert not loaded.training
    assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight
    assert not loaded.bert.encoder.c_layer[0].biOutput.q_dense1.weight.requires_grad
    inputs = make_inputs(tiny_config)
    for task, logits in _outputs(model, inputs).items():
        torch.testing.assert_close(_outputs(loaded, inputs)[task], logits, rtol=0, atol=0)
    with pytest.raises(FileExistsError):
        save_pretrained(model, target)
    save_pretrained(model, target, overwrite=True)
    assert load_pretrained(target, dtype=torch.bfloat16).bert.t_pooler.dense.weight.dtype == (
        torch.bfloat16
    )


def test_native_load_errors(tmp_path: Path, tiny_config: ViLBERTConfig) -> None:
    with pytest.raises(CheckpointError, match="not a twelve model directory"):
        load_pretrained(tmp_path / "absent")
    model = MultiTaskViLBERT(tiny_config)
    save_pretrained(model, tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["text"]["intermediate_size"] = 128
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"(?s)does not fit.*intermediate\.dense\.weight"):
        load_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"lacks model\.safetensors"):
        load_pretrained(tmp_path / "m")


def test_failed_save_leaves_nothing_behind(
    tmp_path: Path, tiny_config: ViLBERTConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = MultiTaskViLBERT(tiny_config)

    def boom(*_args: Any, **_kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("twelve.model.checkpoint.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(model, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_load_original_weights_into_an_existing_model(
    tiny_config: ViLBERTConfig, original_state: dict[str, torch.Tensor]
) -> None:
    model = MultiTaskViLBERT(tiny_config)
    report = load_original_weights(model, original_state)
    assert report.kind == "multi-task"
    torch.testing.assert_close(
        model.state_dict()["bert.encoder.layer.2.attention.self.key.weight"],
        original_state["bert.encoder.layer.2.attention.self.key.weight"],
    )
