"""The `twelve data` command group; heavy imports stay inside the commands that need them."""

from __future__ import annotations

import click


@click.group(name="data")
def data() -> None:
    """Task datasets: inspect official files, build answer vocabularies, hard negatives."""
