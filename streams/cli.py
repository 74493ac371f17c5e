"""The `reloadtrace` command line: one entry point, each command a thin wrapper over its package.

Commands import their package lazily so that `reloadtrace --help` stays fast and a command only
pays for the libraries it uses.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="reloadtrace",
    help="Truthful traces across hot reloads: enrich spans with the versions active when they ran.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the installed reloadtrace version."""
    from importlib.metadata import version as installed_version

    typer.echo(installed_version("reloadtrace"))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
