"""`latbot serve`: serve a finetuned policy to robots over websockets (openpi's protocol)."""

from __future__ import annotations

from pathlib import Path

import typer

from latbot.cli._common import user_errors

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@user_errors
def serve(
    checkpoint: Path = typer.Option(..., help="A finetuned policy run directory (manifest kind 'finetune')."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; the default accepts local clients only."),
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port (0: any free port)."),
    device: str = typer.Option("cpu", help="torch device for the model, e.g. cuda:0."),
) -> None:
    """Load the policy once and answer observations with action chunks until interrupted."""
    from latbot.errors import LatBotError
    from latbot.policy import LatBotPolicy
    from latbot.serve.server import PolicyServer

    policy = LatBotPolicy.from_checkpoint(checkpoint, device=device)
    try:
        server = PolicyServer(policy, host, port)
    except OSError as e:
        raise LatBotError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port") from e
    if host not in LOOPBACK:
        typer.echo(f"warning: listening on {host}: the server has no authentication; expose it on trusted networks")
    typer.echo(
        f"serving {checkpoint} on ws://{server.host}:{server.port} (health: http://{server.host}:{server.port}/healthz)",
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        server.shutdown()
