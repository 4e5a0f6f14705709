"""The `twelve features` command group; heavy imports stay inside the commands that need them."""

from __future__ import annotations

import click


@click.group(name="features")
def features() -> None:
    """Region features: extract, store, inspect and verify."""
