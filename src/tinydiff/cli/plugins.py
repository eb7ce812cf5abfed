"""``tinydiff plugins``: what is installed, what each plugin registered, and what failed."""

from __future__ import annotations

import json

import typer

from .output import console, handles_errors


@handles_errors
def plugins_command(
    all_: bool = typer.Option(False, "--all", help="Include TinyDiff's built-in plugins."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """List installed plugins, their versions, and what each registered."""
    from ..plugins import get_host

    host = get_host()
    host.registries  # noqa: B018 -- registering fills in each plugin's components and errors
    rows = [
        {
            "name": info.name,
            "version": info.version,
            "distribution": info.distribution,
            "builtin": info.builtin,
            "registered": info.registered,
            "status": "disabled" if info.disabled else ("error" if info.error else "ok"),
            "error": info.error,
        }
        for info in host.plugins.values()
        if all_ or not info.builtin
    ]
    if as_json:
        console.print_json(json.dumps(rows)) if console.is_terminal else typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no plugins installed (built-ins: tinydiff plugins --all)")
        return
    from rich.table import Table

    table = Table("plugin", "version", "registered", "status")
    for row in rows:
        registered = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in row["registered"].items()) or "-"
        status = {"ok": "[green]ok", "disabled": "[yellow]disabled"}.get(row["status"], f"[red]{row['error']}")
        table.add_row(row["name"], row["version"], registered, status)
    console.print(table)
