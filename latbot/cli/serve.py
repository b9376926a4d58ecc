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
    max_message_mb: float = typer.Option(
        32.0, min=0.001, max=4096, help="Largest request (MiB); larger closes (1009)."
    ),
    max_connections: int = typer.Option(16, min=1, max=10_000, help="Open connections; more are refused (HTTP 503)."),
    max_per_client: int = typer.Option(
        4, min=1, max=10_000, help="Open connections from one IP address; more are refused (HTTP 503)."
    ),
    max_inflight_mb: float = typer.Option(
        256.0, min=0.001, max=1 << 20, help="Requests waiting for the model (MiB); more are answered 503."
    ),
    idle_timeout: float = typer.Option(
        60.0, min=0.01, max=86_400, help="Seconds a connection may go without a complete message; then closed."
    ),
    resize: bool = typer.Option(False, help="Resize images of another size to the policy's (default: 400)."),
) -> None:
    """Load the policy once and answer observations with action chunks until interrupted."""
    from latbot.errors import LatBotError
    from latbot.policy import load_policy
    from latbot.serve.server import PolicyServer

    policy = load_policy(checkpoint, device=device)
    try:
        server = PolicyServer(
            policy,
            host,
            port,
            int(max_message_mb * (1 << 20)),
            max_connections=max_connections,
            max_inflight=int(max_inflight_mb * (1 << 20)),
            max_per_client=max_per_client,
            idle_timeout=idle_timeout,
            resize=resize,
        )
    except OSError as e:
        raise LatBotError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port") from e
    if host not in LOOPBACK:
        typer.echo(f"warning: listening on {host}: the server has no authentication; expose it on trusted networks")
    typer.echo(
        f"serving {checkpoint} on ws://{server.host}:{server.port} (health: http://{server.host}:{server.port}/healthz)",
    )
    import signal

    def stop(signum, frame):  # SIGTERM stops like Ctrl-C: close connections, exit within a second
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("stopped")
    finally:
        server.shutdown()
