"""The root `twelve` command: gathers the command groups that installed twelve packages register.

Every package that can be installed on its own ships this same file (a test keeps the copies
identical), so `twelve` exists whichever packages are installed. Packages add their commands through
the `twelve.cli` entry-point group; nothing here imports a package's code beyond its click group.
"""

from __future__ import annotations

from importlib.metadata import distributions, entry_points

import click

ENTRY_POINT_GROUP = "twelve.cli"


def installed_packages() -> dict[str, str]:
    """Map each installed twelve distribution to its version, for `twelve --version`."""
    found = {}
    for dist in distributions():
        name = dist.metadata["Name"] or ""
        if name.startswith("twelve-") and name != "twelve-workspace":
            found[name] = dist.version
    return dict(sorted(found.items()))


def _print_versions(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    for name, version in installed_packages().items():
        click.echo(f"{name} {version}")
    ctx.exit()


def build_root() -> click.Group:
    """Build the `twelve` group with every registered package group attached."""
    root = click.Group(
        name="twelve",
        help="twelve: 12-in-1 multi-task vision-and-language models (ViLBERT).",
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    root.params.append(
        click.Option(
            ["--version"],
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_print_versions,
            help="Print every installed twelve package with its version and exit.",
        )
    )
    for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        command = entry_point.load()
        if not isinstance(command, click.Command):
            raise TypeError(
                f"entry point {entry_point.name!r} = {entry_point.value!r} in group "
                f"{ENTRY_POINT_GROUP!r} is a {type(command).__name__}, not a click command"
            )
        root.add_command(command, entry_point.name)
    return root


def main() -> None:
    """Run the `twelve` command line."""
    build_root()(prog_name="twelve")
