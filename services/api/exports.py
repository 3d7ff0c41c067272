"""An experiment's tables for download: one row per image, or one row per nucleus with its image's
metadata, as CSV or Parquet, filtered like the history. Used by the REST API and the pages alike.

Free metadata (an image's `extra`, such as the ingester's `instrument_channel`) becomes one column
per key, after the fixed columns; a key that clashes with a fixed column of either table is named
`extra_<key>`. The nuclei table then carries each result's extra per-nucleus measures
(`Result.measure_columns`, e.g. `mean_intensity_hoechst`), in the order first seen, empty where a
nucleus has none; a measure that clashes with an earlier column is named `measure_<name>`.

Memory stays flat whatever the experiment's size: rows come from the database in chunks (a server-side
cursor on PostgreSQL), CSV streams as it is written, and Parquet is written in row groups to a
temporary file (on disk beyond a few megabytes) that is then streamed. Text cells of a CSV never start
a spreadsheet formula (shared.domain.spreadsheet).

A streamed table reads through a connection of its own, opened when the first batch is wanted and closed
when the stream ends or is closed (the WSGI server closes it, also when a client stops reading): the
request's session is closed at teardown, before the body is sent, so it cannot serve the stream.
"""
from __future__ import annotations

import csv
import io
import json
import tempfile
from contextlib import closing
from datetime import datetime, timezone
from typing import Iterable, Iterator

from flask import Response
from sqlalchemy import String, Text, cast, func, select, type_coerce
from sqlalchemy.orm import Session

from services.api.queries import NUCLEUS_COLUMNS, STREAM_BATCH, ResultFilters, apply_filters, experiment_query
from shared.infra.db.tables import Experiment, Image, Job, Nucleus, Result
from shared.domain.spreadsheet import inert

FORMATS = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
ROW_GROUP = 50_000  # Parquet rows per row group: some tens of megabytes of Arrow arrays at most
SPOOL_IN_MEMORY = 8 * 2 ** 20  # a Parquet file larger than this goes to disk while it is built
READ_CHUNK = 2 ** 20

# column -> pyarrow type name; the fixed columns of each table, in order
RESULT_TYPES = {
    "image_id": "string", "job_id": "string", "filename": "string", "condition": "string", "well": "string",
    "plate": "string", "site": "string", "channel": "int64", "pixel_size_um": "float64", "width": "int64",
    "height": "int64", "status": "string", "error": "string", "count": "int64", "model_version": "string",
    "area_mean": "float64", "area_median": "float64", "area_min": "float64", "area_max": "float64",
    "created": "timestamp",
}
RESULT_SOURCES = [
    Image.id, Job.id, Image.filename, Image.condition, Image.well, Image.plate, Image.site, Image.channel,
    Image.pixel_size_um, Image.width, Image.height, type_coerce(Job.status, String), Job.error, Result.count,
    Result.model_version,
    Result.area_mean, Result.area_median, Result.area_min, Result.area_max, Image.created,
]
IMAGE_COLUMNS = ["image_id", "filename", "condition", "well", "plate", "site", "channel", "pixel_size_um", "created",
                 "model_version"]
IMAGE_SOURCES = [Image.id, Image.filename, Image.condition, Image.well, Image.plate, Image.site, Image.channel,
                 Image.pixel_size_um, Image.created, Result.model_version]
NUCLEUS_TYPES = {
    **{c: RESULT_TYPES[c] for c in IMAGE_COLUMNS},
    **{c: "int64" if c == "label" else "float64" for c in NUCLEUS_COLUMNS},
}
RESULT_COLUMNS = list(RESULT_TYPES)
NUCLEI_COLUMNS = list(NUCLEUS_TYPES)


def metadata_keys(session: Session, experiment: Experiment, filters: ResultFilters) -> list[str]:
    """The free metadata keys used by the experiment's (filtered) images, sorted. The database hands
    back each distinct metadata text once."""
    query = experiment_query([cast(Image.extra, Text)], experiment, filters).distinct()
    keys: set[str] = set()
    for batch in _stream(session.connection(), query):
        keys.update(key for (text,) in batch if text for key in json.loads(text))
    return sorted(keys)


class _Metadata:
    """An image's free metadata, as the values of the export's metadata columns, decoded once for a run
    of rows with the same metadata text."""

    def __init__(self, extras: list[tuple[str, str]]):
        self.keys, self.text, self.values = [key for key, _ in extras], None, [None] * len(extras)

    def __call__(self, text: str | None) -> list:
        if text != self.text:
            decoded = json.loads(text) if text else {}
            self.text, self.values = text, [decoded.get(key) for key in self.keys]
        return self.values


def measure_columns(session: Session, experiment: Experiment, filters: ResultFilters) -> list[str]:
    """The union of the (filtered) results' extra nucleus columns, in the order first seen. The database
    hands back each distinct list once, with the creation time of its first image. Unless a filter reads
    jobs, every result of the matching images counts (an earlier model version's too), which spares the
    newest-job join."""
    listed = cast(Result.measure_columns, Text)
    columns = [listed, func.min(Image.created)]
    if filters.reads_jobs:
        query = experiment_query(columns, experiment, filters, with_result=True)
    else:
        query = apply_filters(select(*columns).select_from(Result).join(Image, Image.id == Result.image_id)
                              .where(Image.experiment_id == experiment.id), filters)
    query = query.group_by(listed).order_by(func.min(Image.created))
    names: dict[str, None] = {}
    for text, _first in session.execute(query):
        names.update(dict.fromkeys(json.loads(text) if text else []))
    return list(names)


def _extra_columns(keys: list[str]) -> list[tuple[str, str]]:
    """(key, column name) for each free metadata key, named alike in both tables."""
    fixed = {*RESULT_COLUMNS, *NUCLEI_COLUMNS}
    return [(key, f"extra_{key}" if key in fixed else key) for key in keys]


def _measure_columns(names: list[str], taken: list[str]) -> list[tuple[str, str]]:
    taken = set(taken)
    return [(name, f"measure_{name}" if name in taken else name) for name in names]


def _stream(connection, query) -> Iterator[list]:
    """The rows of `query` in lists of STREAM_BATCH, read through a server-side cursor where the
    database has one (Core rows: the ORM's per-row work is not needed for plain columns)."""
    result = connection.execute(query.execution_options(yield_per=STREAM_BATCH))
    for batch in result.partitions():
        yield batch


def streamed_rows(session: Session, query) -> Iterator[list]:
    """`_stream` on a connection of its own from the session's engine, for a body sent after the request:
    opened on the first batch, returned to the pool when the rows end or the generator is closed."""
    engine = session.get_bind()

    def rows() -> Iterator[list]:
        with engine.connect() as connection, closing(_stream(connection, query)) as batches:
            yield from batches

    return rows()


def _attachment(experiment: Experiment, table: str, fmt: str) -> dict:
    return {"Content-Disposition": f'attachment; filename="experiment-{experiment.id}-{table}.{fmt}"'}


def _column_style(columns: list[str], types: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """`?columns=cellprofiler` names the columns as CellProfiler does (shared.domain.cellprofiler); native by default."""
    from flask import request

    from services.api.errors import ApiError
    from shared.domain.cellprofiler import STYLES, rename_table

    style = request.args.get("columns") or "native"
    if style not in STYLES:
        raise ApiError(400, "invalid_query", f"columns must be one of {', '.join(STYLES)}, not {style[:40]!r}")
    return rename_table(columns, types, style)


def _respond(experiment: Experiment, table: str, fmt: str, columns: list[str], types: dict[str, str],
             batches: Iterable[list[list]]) -> Response:
    headers = _attachment(experiment, table, fmt)
    columns, types = _column_style(columns, types)
    if fmt == "parquet":
        return parquet_response(columns, types, batches, headers)
    return Response(csv_lines(columns, types, batches), mimetype=FORMATS[fmt], headers=headers)


# --- the per-image table -----------------------------------------------------------------------------------------

def _result_batches(session: Session, experiment: Experiment, filters: ResultFilters,
                    extras: list[tuple[str, str]]) -> Iterator[list[list]]:
    query = (experiment_query([*RESULT_SOURCES, cast(Image.extra, Text)], experiment, filters)
             .order_by(*filters.order()))
    metadata = _Metadata(extras)
    rows = streamed_rows(session, query)

    def batches() -> Iterator[list[list]]:
        with closing(rows):
            for batch in rows:
                yield [[*row, *metadata(extra)] for *row, extra in batch]

    return batches()


def results_export(session: Session, experiment: Experiment, filters: ResultFilters, fmt: str) -> Response:
    extras = _extra_columns(metadata_keys(session, experiment, filters))
    columns = RESULT_COLUMNS + [column for _key, column in extras]
    types = {**RESULT_TYPES, **{column: "string" for _key, column in extras}}
    return _respond(experiment, "results", fmt, columns, types, _result_batches(session, experiment, filters, extras))


# --- the per-nucleus table ---------------------------------------------------------------------------------------

def _nucleus_batches(session: Session, experiment: Experiment, filters: ResultFilters,
                     extras: list[tuple[str, str]], measures: list[tuple[str, str]]) -> Iterator[list[list]]:
    # the database picks each measure out of its nucleus's JSON; the image's metadata comes as text,
    # decoded once per image (its nuclei are consecutive)
    query = (experiment_query([*IMAGE_SOURCES, *(getattr(Nucleus, c) for c in NUCLEUS_COLUMNS),
                               *(Nucleus.measures[name].as_float() for name, _ in measures), cast(Image.extra, Text)],
                              experiment, filters, with_result=True)
             .join(Nucleus, Nucleus.result_id == Result.id)
             .order_by(Image.created, Image.id, Nucleus.result_id, Nucleus.label))
    fixed = len(IMAGE_SOURCES) + len(NUCLEUS_COLUMNS)
    metadata = _Metadata(extras)
    rows = streamed_rows(session, query)

    def batches() -> Iterator[list[list]]:
        with closing(rows):
            for batch in rows:
                yield [[*row[:fixed], *metadata(extra), *row[fixed:]] for *row, extra in batch]

    return batches()


def nuclei_export(session: Session, experiment: Experiment, filters: ResultFilters, fmt: str) -> Response:
    extras = _extra_columns(metadata_keys(session, experiment, filters))
    measures = _measure_columns(measure_columns(session, experiment, filters),
                                NUCLEI_COLUMNS + [column for _key, column in extras])
    columns = NUCLEI_COLUMNS + [column for _key, column in extras] + [column for _name, column in measures]
    types = {**NUCLEUS_TYPES, **{column: "string" for _key, column in extras},
             **{column: "float64" for _name, column in measures}}
    batches = _nucleus_batches(session, experiment, filters, extras, measures)
    return _respond(experiment, "nuclei", fmt, columns, types, batches)


# --- writers -----------------------------------------------------------------------------------------------------

def _timestamp(value):
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # SQLite hands back naive datetimes written as UTC
    return value


def _csv_timestamp(value):
    return None if value is None else _timestamp(value).isoformat()


def csv_lines(columns: list[str], types: dict[str, str], batches: Iterable[list[list]]) -> Iterator[str]:
    """The header, then one chunk of lines per batch (so a long table streams). Only the text and time
    columns are converted; numbers and empty cells (None) go to the csv module as they are."""
    convert = [(i, inert if types[c] == "string" else _csv_timestamp) for i, c in enumerate(columns)
               if types[c] in ("string", "timestamp")]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([inert(c) for c in columns])
    try:
        yield buffer.getvalue()
        for batch in batches:
            buffer.seek(0)
            buffer.truncate()
            for row in batch:
                for i, function in convert:
                    row[i] = function(row[i])
            writer.writerows(batch)
            yield buffer.getvalue()
    finally:
        if hasattr(batches, "close"):
            batches.close()  # the rows' connection goes back to the pool now, not when the generator is collected


def _arrow_type(name: str):
    import pyarrow as pa

    return pa.timestamp("us", tz="UTC") if name == "timestamp" else getattr(pa, name)()


def write_parquet(sink, columns: list[str], types: dict[str, str], batches: Iterable[list[list]]) -> None:
    """A Parquet file in `sink` with row groups of up to ROW_GROUP rows (an empty table still has its
    schema); only one row group's worth of rows is held at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, _arrow_type(types[c])) for c in columns])
    timestamps = {i for i, c in enumerate(columns) if types[c] == "timestamp"}
    pending: list = []
    held = 0
    with pq.ParquetWriter(sink, schema, compression="zstd") as writer:
        for batch in batches:
            if batch:
                values = list(zip(*batch))
                pending.append(pa.record_batch(
                    [pa.array([_timestamp(v) for v in values[i]] if i in timestamps else values[i],
                              type=schema[i].type) for i in range(len(columns))], schema=schema))
                held += len(batch)
            if held >= ROW_GROUP:
                writer.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=held)
                pending, held = [], 0
        if pending:
            writer.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=held)


def parquet_response(columns: list[str], types: dict[str, str], batches: Iterable[list[list]],
                     headers: dict) -> Response:
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
    try:
        write_parquet(spool, columns, types, batches)
        size = spool.tell()
        spool.seek(0)
    except BaseException:
        spool.close()
        if hasattr(batches, "close"):
            batches.close()
        raise

    def chunks() -> Iterator[bytes]:
        with spool:
            while block := spool.read(READ_CHUNK):
                yield block

    return Response(chunks(), mimetype=FORMATS["parquet"], headers={**headers, "Content-Length": str(size)})
