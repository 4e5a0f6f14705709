"""The `twelve model` command group; heavy imports stay inside the commands that need them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


@click.group(name="model")
def model() -> None:
    """The ViLBERT model: convert original checkpoints, show configurations."""


@model.command()
@click.option(
    "--original",
    "weights",
    required=True,
    type=click.Path(path_type=Path),
    help="Original vilbert-multi-task checkpoint (.bin state dict).",
)
@click.option(
    "--original-config",
    "original_config",
    required=True,
    type=click.Path(path_type=Path),
    help="Original JSON config (e.g. bert_base_6layer_6conect.json).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory to write (model.safetensors + config.json).",
)
@click.option(
    "--strict/--no-strict",
    default=None,
    help="Require every key to match (default: exact for multi-task checkpoints, task heads "
    "may be absent from a pretrained one); --no-strict loads whatever matches.",
)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
def convert(
    weights: Path, original_config: Path, out: Path, strict: bool | None, overwrite: bool
) -> None:
    """Convert an original checkpoint into a twelve model directory."""
    from twelve.model.checkpoint import load_original, save_pretrained
    from twelve.model.errors import ModelError

    if out.exists() and not overwrite:
        raise click.ClickException(f"{out} already exists; pass --overwrite to replace it")
    try:
        network, report = load_original(weights, original_config, strict=strict)
        save_pretrained(network, out, overwrite=overwrite)
    except (ModelError, OSError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(report.summary())
    click.echo(f"wrote {out} ({network.num_parameters():,} parameters)")


@model.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def info(target: str, as_json: bool) -> None:
    """Describe a model directory or preset: config, parameters per module, heads and tasks."""
    from twelve.model.errors import ModelError
    from twelve.model.summary import describe

    try:
        description = describe(target)
    except (ModelError, OSError) as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        click.echo(json.dumps(description, indent=2))
    else:
        click.echo(_format(description))


def _format(description: dict[str, Any]) -> str:
    config = description["config"]
    text, vision, co = config["text"], config["vision"], config["co_attention"]
    params = description["parameters"]
    lines = [
        f"{description['source']}",
        f"  text:   {text['num_layers']} layers, width {text['hidden_size']}, "
        f"{text['num_heads']} heads, FFN {text['intermediate_size']}, vocab {text['vocab_size']}",
        f"  vision: {vision['num_layers']} layers, width {vision['hidden_size']}, "
        f"{vision['num_heads']} heads, FFN {vision['intermediate_size']}, "
        f"features {vision['feature_size']}",
        f"  co-attention: {len(co['text_layer_ids'])} blocks, width {co['hidden_size']}, "
        f"{co['num_heads']} heads, before text layers {co['text_layer_ids']} and visual layers "
        f"{co['vision_layer_ids']}",
        f"  pooled {config['pooled_size']}, fusion {config['fusion']}, task tokens "
        + (f"on (table {config['task_token_table_size']})" if config["task_tokens"] else "off"),
        f"parameters: {params['total']:,} (trainable {params['trainable']:,}; "
        f"{params['total'] - params['trainable']:,} frozen dead q_dense weights)",
    ]
    width = max(len(name) for name in params["per_module"])
    for name, count in params["per_module"].items():
        lines.append(f"  {name:<{width}}  {count:>12,}")
    lines.append("heads:")
    for name, head in description["heads"].items():
        spec = ", ".join(f"{k}={v}" for k, v in head["spec"].items() if k != "kind")
        tasks = ", ".join(f"{t['task']} ({t['token_id']})" for t in head["tasks"]) or "-"
        lines.append(
            f"  {name} [{head['spec']['kind']}{': ' + spec if spec else ''}] "
            f"{head['parameters']:,} params; tasks: {tasks}"
        )
    weights = description.get("weights")
    if weights:
        lines.append(
            f"weights: {weights['file']} ({weights['bytes']:,} bytes, {weights['tensors']} tensors, "
            f"dtypes {', '.join(weights['dtypes'])})"
        )
    return "\n".join(lines)
