"""The `twelve model` command group; heavy imports stay inside the commands that need them."""

from __future__ import annotations

import click


@click.group(name="model")
def model() -> None:
    """The ViLBERT model: convert original checkpoints, show configurations."""
