"""`nucleus ingest`: upload an instrument's images as they appear in a folder (see nucleus/ingest/)."""
from __future__ import annotations

import signal
import threading
from pathlib import Path

import click


def _server_url(ctx, param, value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise click.BadParameter("give the API's base URL, e.g. http://127.0.0.1:8000")
    return value.rstrip("/")


def _stop_on_signals(stop: threading.Event) -> None:
    """The first SIGINT/SIGTERM finishes the upload in flight and exits; a second one stops at once
    (safe too: the state file is only ever replaced whole)."""
    def handler(signum, frame):
        stop.set()
        signal.signal(signum, signal.SIG_DFL)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@click.command()
@click.option("--watch", "folder", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The instrument's output folder (subfolders included).")
@click.option("--experiment", required=True, help="Experiment to upload into; created if it does not exist.")
@click.option("--server", required=True, callback=_server_url, help="The nucleus server, e.g. http://host:8000.")
@click.option("--token", required=True, envvar="NUCLEUS_INGEST_TOKEN",
              help="An uploader (or admin) token; also read from $NUCLEUS_INGEST_TOKEN.")
@click.option("--pattern", default=None,
              help="Regex searched in each file's path relative to the folder, with named groups plate, well, "
                   "row, col, site, channel, condition. Default: Opera/Operetta (r02c03f01p01-ch1.tiff) and "
                   "MetaXpress (Plate1_A01_s1_w1.tif) names.")
@click.option("--settle", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Seconds a file's size must stay unchanged before it is sent.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="State file (default: $XDG_STATE_HOME/nucleus/ingest/<folder+server+experiment>.json).")
@click.option("--once", is_flag=True, help="Send what is in the folder now (waiting for it to settle), then exit.")
@click.option("--max-backoff", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Longest wait between retries while the server is unreachable (Retry-After wins).")
def ingest(folder, experiment, server, token, pattern, settle, state_path, once, max_backoff):
    """Watch the --watch folder and upload each new image once it is completely written.

    Survives the server being down or restarting; remembers what it sent, so a restart resends
    nothing and a copy of a file already sent is not sent again.
    """
    from nucleus.ingest.client import ApiClient, Backoff
    from nucleus.ingest.console import Console
    from nucleus.ingest.names import DEFAULT_PATTERNS, PatternError, compile_pattern
    from nucleus.ingest.runner import Ingester, IngestFatal
    from nucleus.ingest.state import SentState, StateError, default_state_path, is_inside

    try:
        patterns = (compile_pattern(pattern),) if pattern else DEFAULT_PATTERNS
    except PatternError as exc:
        raise click.BadParameter(str(exc), param_hint="--pattern") from None
    state_path = state_path or default_state_path(folder, server, experiment)
    if is_inside(state_path, folder):
        raise click.BadParameter(f"{state_path} is inside the watched folder; keep the state elsewhere",
                                 param_hint="--state")

    stop = threading.Event()
    _stop_on_signals(stop)
    console = Console()
    state = SentState(state_path, folder, server, experiment)
    try:
        state.open()
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        click.echo(f"state: {state_path}", err=True)
        ingester = Ingester(folder, ApiClient(server, token, experiment), state, settle=settle, patterns=patterns,
                            once=once, backoff=Backoff(maximum=max_backoff), console=console, stop=stop)
        totals = ingester.run()
    except IngestFatal as exc:
        console.close()
        raise click.ClickException(str(exc)) from None
    finally:
        state.close()
    if totals.rejected:
        raise click.ClickException(f"{totals.rejected} file(s) refused by the server: "
                                   + ", ".join(totals.rejected_files[:10]))
