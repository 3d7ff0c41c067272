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


def _token(given: str | None, token_file: Path | None) -> str:
    """--token, else --token-file, else $NUCLEUS_TOKEN (or the older $NUCLEUS_INGEST_TOKEN)."""
    import os

    from nucleus.client import read_token

    if given:
        click.echo("note: a token given with --token is visible to other users in `ps`; prefer $NUCLEUS_TOKEN "
                   "or --token-file", err=True)
    if token_file is not None and token_file.stat().st_mode & 0o077:
        click.echo(f"warning: {token_file} can be read by other users; chmod 600 it", err=True)
    try:
        token = read_token(given, token_file) or (os.environ.get("NUCLEUS_INGEST_TOKEN") or "").strip()
    except (OSError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--token-file") from None
    if not token:
        raise click.UsageError("no token: set $NUCLEUS_TOKEN, or give --token-file PATH (or --token, visible in ps)")
    return token


@click.command()
@click.option("--watch", "folder", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="The instrument's output folder (subfolders included).")
@click.option("--experiment", required=True, help="Experiment to upload into; created if it does not exist.")
@click.option("--server", required=True, callback=_server_url, help="The nucleus server, e.g. http://host:8000.")
@click.option("--token", default=None,
              help="An uploader (or admin) token. Visible to every user of this computer in `ps`: prefer "
                   "$NUCLEUS_TOKEN or --token-file.")
@click.option("--token-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A file whose first line is the token (keep it private: chmod 600).")
@click.option("--pattern", default=None,
              help="Regex searched in each file's path relative to the folder, with named groups plate, well, "
                   "row, col, site (or field), plane, timepoint, channel, condition. Default: Opera/Operetta (r02c03f01p01-ch1.tiff) and "
                   "MetaXpress (Plate1_A01_s1_w1.tif) names.")
@click.option("--nuclear-channel", default=None, metavar="LABEL",
              help="Group per-channel files (Opera/Operetta -ch1, MetaXpress _w1, or --pattern's channel group) "
                   "into one multi-channel image per field (plate, well, site, plane); the channel labelled LABEL "
                   "(e.g. ch1 or w1) is segmented and every channel measured. A channel file is never sent alone.")
@click.option("--channels", default=None, metavar="LABEL,LABEL...",
              help="With --nuclear-channel: the channels every field has (e.g. ch1,ch2); a field waits until all are "
                   "there and settled. Default: every channel seen in the folder so far (give this when the "
                   "instrument writes one channel for the whole plate before the next).")
@click.option("--pixel-size", "pixel_size", type=click.FloatRange(min=0, min_open=True), default=None, metavar="UM",
              help="Pixel size in µm sent with every image (overrides the files' own), for measurements in µm.")
@click.option("--settle", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Seconds a file's size must stay unchanged before it is sent.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="State file (default: $XDG_STATE_HOME/nucleus/ingest/<folder+server+experiment>.json).")
@click.option("--once", is_flag=True, help="Send what is in the folder now (waiting for it to settle), then exit.")
@click.option("--max-backoff", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Longest wait between retries while the server is unreachable (Retry-After wins).")
def ingest(folder, experiment, server, token, token_file, pattern, nuclear_channel, channels, pixel_size, settle, state_path, once, max_backoff):
    """Watch the --watch folder and upload each new image once it is completely written.

    Survives the server being down or restarting; remembers what it sent, so a restart resends
    nothing and a copy of a file already sent is not sent again.

    The token comes from $NUCLEUS_TOKEN, --token-file, or --token (which other users see in `ps`).
    """
    from nucleus.ingest.client import ApiClient, Backoff
    from nucleus.ingest.console import Console
    from nucleus.ingest.names import DEFAULT_PATTERNS, PatternError, compile_pattern, normalise_label
    from nucleus.ingest.runner import Ingester, IngestFatal
    from nucleus.ingest.state import SentState, StateError, default_state_path, is_inside

    token = _token(token, token_file)
    try:
        patterns = (compile_pattern(pattern),) if pattern else DEFAULT_PATTERNS
    except PatternError as exc:
        raise click.BadParameter(str(exc), param_hint="--pattern") from None
    if pattern and nuclear_channel and "channel" not in patterns[0].groupindex:
        raise click.BadParameter("with --nuclear-channel the pattern needs a (?P<channel>...) group",
                                 param_hint="--pattern")
    channel_list = tuple(c.strip() for c in (channels or "").split(",") if c.strip())
    if channel_list and not nuclear_channel:
        raise click.BadParameter("--channels goes with --nuclear-channel", param_hint="--channels")
    if channel_list and normalise_label(nuclear_channel) not in {normalise_label(c) for c in channel_list}:
        raise click.BadParameter(f"the nuclear channel {nuclear_channel!r} is not among them", param_hint="--channels")
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
                            once=once, backoff=Backoff(maximum=max_backoff), console=console, stop=stop,
                            nuclear_channel=nuclear_channel, channels=channel_list, pixel_size_um=pixel_size)
        totals = ingester.run()
    except IngestFatal as exc:
        console.close()
        raise click.ClickException(str(exc)) from None
    finally:
        state.close()
    if once and totals.held:
        raise click.ClickException(f"{len(totals.held)} file(s) of multi-channel fields not sent: give "
                                   "--nuclear-channel LABEL")
    if once and totals.incomplete:
        raise click.ClickException(f"{len(totals.incomplete)} field(s) not sent, channels missing: "
                                   + ", ".join(totals.incomplete[:10]))
    if totals.rejected:
        raise click.ClickException(f"{totals.rejected} file(s) refused by the server: "
                                   + ", ".join(totals.rejected_files[:10]))
