"""The `latbot` command line. Each command group lives in its own module; heavy imports stay inside
the commands so that `latbot --help` is fast."""

from __future__ import annotations

import typer

from latbot import __version__
from latbot.cli import analysis, data, export, plan, plugins, quickstart, recipe, serve, sim, study, train, viz

app = typer.Typer(
    name="latbot",
    help="LatBot: distil universal latent actions into vision-language-action models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"latbot {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    no_verify: bool = typer.Option(
        False,
        "--no-verify",
        help="Open runs, checkpoints and stores whose content no longer matches their manifest's hash "
        "(normally refused). Only for artifacts you trust.",
    ),
) -> None:
    """LatBot: distil universal latent actions into vision-language-action models."""
    from latbot.ownership import set_verification

    if no_verify:  # for this command only: an embedding process's next command verifies again
        from latbot.ownership import verification_enabled

        before = verification_enabled()
        set_verification(False)
        ctx.call_on_close(lambda: set_verification(before))


app.command("train")(train.train)
app.command("plan")(plan.plan)
app.command("grounding-analysis")(analysis.grounding_analysis)
app.command("serve")(serve.serve)
app.command("quickstart")(quickstart.quickstart)
app.command("study")(study.study)
app.command("export")(export.export)
app.add_typer(recipe.app, name="recipe")
app.add_typer(plugins.app, name="plugins")
data.app.command("gen-sim")(sim.gen_sim)
app.add_typer(data.app, name="data")
app.add_typer(sim.eval_app, name="eval")
app.add_typer(viz.app, name="viz")


def main() -> None:
    app()
