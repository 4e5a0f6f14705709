"""`twelve model convert` and `twelve model info`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from click.testing import CliRunner

from twelve.model.checkpoint import load_pretrained
from twelve.model.cli import model as model_group
from twelve.model.config import ViLBERTConfig
from twelve.model.model import MultiTaskViLBERT


def _original_files(tmp_path: Path, tiny_original: dict[str, Any]) -> tuple[Path, Path]:
    network = MultiTaskViLBERT(ViLBERTConfig.from_original(tiny_original))
    weights = tmp_path / "multi_task_model.bin"
    torch.save(network.state_dict(), weights)
    config = tmp_path / "bert_tiny.json"
    config.write_text(json.dumps({**tiny_original, "task_specific_tokens": False}))
    return weights, config


def test_convert_then_info(tmp_path: Path, tiny_original: dict[str, Any]) -> None:
    weights, config = _original_files(tmp_path, tiny_original)
    out = tmp_path / "converted"
    runner = CliRunner()
    result = runner.invoke(
        model_group,
        [
            "convert",
            "--original",
            str(weights),
            "--original-config",
            str(config),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "multi-task checkpoint" in result.output
    assert f"wrote {out}" in result.output
    loaded = load_pretrained(out)
    assert loaded.config.task_tokens
    original = torch.load(weights, weights_only=True)
    torch.testing.assert_close(
        loaded.state_dict()["bert.encoder.c_layer.0.biattention.value2.weight"],
        original["bert.encoder.c_layer.0.biattention.value2.weight"],
    )

    info = runner.invoke(model_group, ["info", str(out), "--json"])
    assert info.exit_code == 0, info.output
    described = json.loads(info.output)
    assert described["parameters"]["total"] == loaded.num_parameters()
    assert described["heads"]["vision_logit"]["spec"] == {"kind": "region"}
    assert [t["task"] for t in described["heads"]["vil_prediction"]["tasks"]] == ["vqa", "vg_qa"]
    assert described["weights"]["dtypes"] == ["F32"]

    again = runner.invoke(
        model_group,
        [
            "convert",
            "--original",
            str(weights),
            "--original-config",
            str(config),
            "--out",
            str(out),
        ],
    )
    assert again.exit_code != 0
    assert "already exists" in again.output


def test_convert_errors_exit_non_zero_and_write_nothing(
    tmp_path: Path, tiny_original: dict[str, Any]
) -> None:
    weights, config = _original_files(tmp_path, tiny_original)
    broken = torch.load(weights, weights_only=True)
    broken["bert.t_pooler.dense.weight"] = torch.zeros(2, 2)
    torch.save(broken, weights)
    out = tmp_path / "converted"
    result = CliRunner().invoke(
        model_group,
        [
            "convert",
            "--original",
            str(weights),
            "--original-config",
            str(config),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1
    assert "bert.t_pooler.dense.weight: checkpoint (2, 2)" in result.output
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bert_tiny.json", "multi_task_model.bin"]

    config.write_text(json.dumps({**tiny_original, "dynamic_attention": True}))
    result = CliRunner().invoke(
        model_group,
        [
            "convert",
            "--original",
            str(weights),
            "--original-config",
            str(config),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 1
    assert "dynamic_attention=True is not supported" in result.output


def test_info_on_presets() -> None:
    runner = CliRunner()
    result = runner.invoke(model_group, ["info", "12in1-base"])
    assert result.exit_code == 0, result.output
    assert "parameters: 268,028,859" in result.output
    assert "vision_logit [region] 1,025 params; tasks: visual7w (4), refcoco (9)" in result.output
    described = json.loads(runner.invoke(model_group, ["info", "tiny", "--json"]).output)
    assert described["source"] == "preset tiny"
    missing = runner.invoke(model_group, ["info", "no-such-model"])
    assert missing.exit_code == 1
    assert "neither a model directory nor a preset" in missing.output
