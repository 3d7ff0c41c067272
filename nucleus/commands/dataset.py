"""`nucleus dataset import|list|build`: the base training set and its fixed validation split in the object store, where
a trainer without ../shared/data (a pip or docker deployment) finds them (shared.infra.base_set)."""
from __future__ import annotations

from pathlib import Path

import click

from nucleus.commands.db import apply_data_dir, data_dir_option


@click.group()
def dataset():
    """Labelled sets in the object store."""


@dataset.command(name="import")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--name", default="base", show_default=True,
              help="The set's name; the trainer uses NUCLEUS_TRAINING_BASE_SET (default: base).")
@click.option("--validation-split", type=click.File(), default=None,
              help="A file of image names (one a line) never trained on; default: the committed DSB2018 split.")
@data_dir_option
def import_(folder, name, validation_split, data_dir):
    """Store FOLDER (images/ + labels/, or the DSB competition layout) as the set NAME. Running it again uploads
    only what changed."""
    from shared.infra.base_set import import_set
    from shared.infra.storage import StorageUnavailable, get_store

    apply_data_dir(data_dir)
    validation = None
    if validation_split is not None:
        validation = [line.strip() for line in validation_split if line.strip() and not line.startswith("#")]
    store = get_store()
    try:
        if hasattr(store, "ensure_bucket"):
            store.ensure_bucket()
        report = import_set(folder, store, name=name, validation=validation,
                            progress=lambda done, total: done % 100 == 0 and click.echo(f"{done}/{total}", err=True))
    except (ValueError, FileNotFoundError, StorageUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"set {report.name!r}: {report.images} images, {report.validation} in the validation split; "
               f"{report.uploaded} files uploaded, {report.unchanged} already there"
               f"{'' if report.manifest_changed else ' (unchanged)'}")


@dataset.command(name="list")
@data_dir_option
def list_(data_dir):
    """The sets in the object store."""
    from shared.infra.base_set import read_manifest, stored_names
    from shared.infra.storage import get_store

    apply_data_dir(data_dir)
    store = get_store()
    for name in stored_names(store):
        manifest = read_manifest(store, name) or {}
        click.echo(f"{name}\t{len(manifest.get('images', {}))} images\t"
                   f"{len(manifest.get('validation', []))} validation\t{manifest.get('created', '')}")


@dataset.command(name="build")
@click.option("--source", "sources", multiple=True, required=True, metavar="KIND=DIR",
              help="A source folder and its converter: dsb2018=DIR (its fixed validation split marked, to "
                   "validate on), kromp=DIR (its train split only), nuinsseg-yolo=DIR (train and val splits), "
                   "folder=DIR (images/ + labels/, all training images). Repeat for several.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="A new (or empty) folder for images/, labels/ and index.csv (each image's source, kind and split).")
def build(sources, out):
    """Rebuild the multi-source training set from the folders named (docs/DATA_CARD.md lists the sources)."""
    from shared.domain.datasets.sources import CONVERTERS, build_training_set

    pairs = []
    for text in sources:
        kind, sep, folder = text.partition("=")
        if not sep or kind not in CONVERTERS or not folder:
            raise click.BadParameter(f"{text!r}: expected KIND=DIR with KIND one of {', '.join(CONVERTERS)}",
                                     param_hint="--source")
        if not Path(folder).is_dir():
            raise click.BadParameter(f"{folder}: no such folder", param_hint="--source")
        pairs.append((kind, Path(folder)))
    try:
        report = build_training_set(pairs, out, progress=lambda done, total: done % 100 == 0 and
                                    click.echo(f"{done}/{total}", err=True))
    except (ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{out}: {report.images} images ({report.validation} of them the DSB2018 validation split), "
               f"{report.nuclei} nuclei; by source " + ", ".join(f"{k} {v}" for k, v in report.by_source.items())
               + "; training images by kind " + ", ".join(f"{k} {v}" for k, v in sorted(report.by_kind.items())))
