"""`latbot plugins list | check`."""

from __future__ import annotations

import json

import typer

from latbot.cli._common import user_errors

app = typer.Typer(
    help="Registered encoders, decoders, students, action experts, datasets, simulators and embodiments.",
    no_args_is_help=True,
)


@app.command("list")
@user_errors
def list_(
    kind: str | None = typer.Option(None, help="Only this kind."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List every registered plugin by kind (nothing is imported)."""
    from latbot import registry

    kinds = [kind] if kind else list(registry.KINDS)
    rows = []
    for k in kinds:
        for claims in registry.entries(k):
            for c in claims:
                rows.append(
                    {
                        "kind": k,
                        "name": c.name,
                        "distribution": c.distribution,
                        "target": c.target,
                        "builtin": c.is_builtin,
                        "conflict": len(claims) > 1,
                    }
                )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for k in kinds:
        mine = [r for r in rows if r["kind"] == k]
        typer.echo(f"{k}:")
        if not mine:
            typer.echo("  (none)")
        width = max((len(r["name"]) for r in mine), default=0)
        for r in mine:
            origin = "built-in" if r["builtin"] else r["distribution"]
            flag = "  CONFLICT" if r["conflict"] else ""
            typer.echo(f"  {r['name']:<{width}}  {origin}  {r['target']}{flag}")
    if registry.autoload_disabled():
        typer.echo(f"(third-party plugins hidden: {registry.AUTOLOAD_ENV} is set)")


@app.command()
@user_errors
def check(kind: str | None = typer.Option(None, help="Only this kind.")) -> None:
    """Import every plugin and check its contract; exit 1 if any plugin is broken."""
    from latbot import registry
    from latbot.errors import RegistryError

    failures = 0
    for k in [kind] if kind else list(registry.KINDS):
        for name in registry.names(k):
            try:
                registry.get(k, name)
                typer.echo(f"ok    {k}/{name}")
            except RegistryError as e:
                failures += 1
                typer.echo(f"FAIL  {k}/{name}: {e}")
    if failures:
        typer.echo(f"{failures} plugin(s) failed", err=True)
        raise typer.Exit(1)
