"""`latbot plugins list | check | new`."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
def check(
    name: str | None = typer.Argument(None, help="Only the plugin(s) with this name (any kind unless --kind)."),
    kind: str | None = typer.Option(None, help="Only this kind."),
    quick: bool = typer.Option(False, "--quick", help="Only import each plugin (no contract run)."),
) -> None:
    """Import plugins and run their contract (docs/plugins.md) on tiny configs and dummy inputs: one line per
    failed requirement, naming the plugin and the rule; exit 1 if any fails."""
    from latbot import registry
    from latbot.errors import LatBotError, RegistryError
    from latbot.testing.contracts import Failure
    from latbot.testing.contracts import check as run_check

    kinds = [kind] if kind else list(registry.KINDS)
    targets = [(k, n) for k in kinds for n in registry.names(k) if name is None or n == name]
    if name is not None and not targets:
        everything = sorted({n for k in kinds for n in registry.names(k)})
        raise LatBotError(
            f"no plugin named '{name}'"
            + (f" of kind {kind}" if kind else "")
            + f" (installed: {', '.join(everything)})"
        )
    failed = 0
    for k, n in targets:
        if quick:
            try:
                registry.get(k, n)
                typer.echo(f"ok    {k}/{n}")
            except RegistryError as e:
                failed += 1
                typer.echo(str(Failure(k, n, "import", str(e))))
            continue
        report = run_check(k, n)
        dist = f" ({report.distribution})" if report.distribution else ""
        if report.ok:
            skipped = f"; not run: {'; '.join(report.skipped)}" if report.skipped else ""
            typer.echo(f"ok    {k}/{n}{dist}: {len(report.passed)} rule(s) passed{skipped}")
        else:
            failed += 1
            for failure in report.failures:
                typer.echo(str(failure))
    if failed:
        typer.echo(f"{failed} plugin(s) failed (contracts: docs/plugins.md)", err=True)
        raise typer.Exit(1)


SUFFIX = {
    "encoders": "Encoder",
    "decoders": "Decoder",
    "students": "Student",
    "action_experts": "ActionExpert",
    "datasets": "Dataset",
    "simulators": "Simulator",
    "embodiments": "Embodiment",
    "stages": "Stage",
}
# What `new` writes: latbot/cli/templates/<kind>.py.tmpl (the plugin) and templates/package/ (the package around
# it), `string.Template` files shipped as package data. Every template imports from LatBot only through
# `latbot.api` (tests/test_api.py checks it).
TEMPLATES = "templates"
TINY_ENCODER = "{type: paligemma, preset: tiny, num_frames: 4, num_scene_tokens: 4, num_motion_tokens: 4}"
TINY_DECODER = "{type: dit, width: 32, depth: 1, heads: 2, image_size: 16, patch_size: 4, horizon: 3}"
TINY_STUDENT = "{type: paligemma, preset: tiny, num_scene_tokens: 4, num_motion_tokens: 4, freeze_vision: false}"
TINY_EXPERT = "{type: flow, width: 32, depth: 1, heads: 2, mlp_ratio: 2.0}"
DEMO_STORE = "latbot data gen-sim --sim metaworld --tasks reach-v3 --episodes 4 -o stores/demo --image-size 32"


def template(path: str):
    """The template file latbot/cli/templates/`path` (e.g. ``encoders.py.tmpl``, ``package/README.md.tmpl``)."""
    from importlib.resources import files
    from string import Template

    return Template(files("latbot.cli").joinpath(TEMPLATES, *path.split("/")).read_text(encoding="utf-8"))


def _recipe(kind: str, name: str) -> str:
    """A recipe that trains with the new plugin (model kinds, stages) or on the data it writes."""
    if kind == "stages":
        return template("package/recipe_stage.yaml.tmpl").substitute(name=name)
    store = "../stores/demo" if kind in ("encoders", "decoders", "students", "action_experts") else f"../stores/{name}"
    if kind in ("encoders", "decoders"):
        return template("package/recipe_lam.yaml.tmpl").substitute(
            name=name,
            what=kind[:-1],
            store=store,
            encoder=f"{{type: {name}}}" if kind == "encoders" else TINY_ENCODER,
            decoder=f"{{type: {name}, horizon: 3}}" if kind == "decoders" else TINY_DECODER,
        )
    what = (
        f"with the `{name}` {kind[:-1].replace('_', ' ')}"
        if kind in ("students", "action_experts")
        else f"on the store `{name}` writes (see README.md)"
    )
    return template("package/recipe_finetune.yaml.tmpl").substitute(
        what=what,
        store=store,
        student=f"{{type: {name}}}" if kind == "students" else TINY_STUDENT,
        expert=f"{{type: {name}}}" if kind == "action_experts" else TINY_EXPERT,
    )


def class_name(kind: str, name: str) -> str:
    """The plugin's class in the scaffold: ``my_encoder`` of kind encoders → ``MyEncoderEncoder``."""
    return "".join(part.title() for part in name.split("_")) + SUFFIX[kind]


def scaffold(kind: str, name: str) -> dict[str, str]:
    """The files of the plugin package `latbot plugins new KIND NAME` writes: path in the package → text."""
    dist, package, cls = f"latbot-{name.replace('_', '-')}", f"latbot_{name}", class_name(kind, name)
    make = {
        "datasets": f"latbot data convert SOURCE --format {name} -o stores/{name} --image-size 32",
        "simulators": f"latbot data gen-sim --sim {name} --tasks reach --episodes 10 -o stores/{name} --image-size 32",
        "embodiments": f"latbot data convert LIBERO_DIR --format libero_hdf5 --set embodiment={name} -o stores/{name}",
        "stages": "# (a stage needs no data)",
    }.get(kind, DEMO_STORE)
    values = {"kind": kind, "name": name, "cls": cls, "dist": dist, "package": package, "make": make}
    return {
        "pyproject.toml": template("package/pyproject.toml.tmpl").substitute(values),
        "README.md": template("package/README.md.tmpl").substitute(values),
        f"src/{package}/__init__.py": template("package/__init__.py.tmpl").substitute(values),
        f"src/{package}/{name}.py": template(f"{kind}.py.tmpl").substitute(values),
        f"tests/test_{name}.py": template("package/test_plugin.py.tmpl").substitute(values),
        f"recipes/{name}.yaml": _recipe(kind, name),
    }


@app.command()
@user_errors
def new(
    kind: str = typer.Argument(..., help="Plugin kind: " + ", ".join(SUFFIX) + "."),
    name: str = typer.Argument(..., help="Registered name (snake_case), e.g. my_encoder."),
    out: Path = typer.Option(Path("."), "--out", help="Directory in which the package directory is created."),
) -> None:
    """Write a plugin package that installs and runs as is: pyproject (entry point), a plugin skeleton that
    passes `latbot plugins check` and imports from LatBot only through `latbot.api`, a test, a recipe and a
    README (from the template files in latbot/cli/templates/)."""
    from latbot import registry
    from latbot.errors import LatBotError

    if kind not in SUFFIX:
        raise LatBotError(f"unknown plugin kind '{kind}' (kinds: {', '.join(SUFFIX)})")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise LatBotError(f"plugin name '{name}' must be snake_case ([a-z][a-z0-9_]*), e.g. my_{kind[:-1]}")
    if name in registry.names(kind):
        raise LatBotError(f"a {kind} plugin named '{name}' is already registered; choose another name")
    root = out / f"latbot-{name.replace('_', '-')}"
    if root.exists():
        raise LatBotError(f"{root} already exists; choose another --out or name")
    files = scaffold(kind, name)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    typer.echo(f"wrote {root} ({kind} plugin '{name}', class {class_name(kind, name)}); next:")
    typer.echo(f"  pip install -e {root} && latbot plugins check {name} && latbot train {root}/recipes/{name}.yaml")
