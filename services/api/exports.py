"""An experiment's tables for download: one row per image, or one row per nucleus with its image's
metadata, as CSV or Parquet, filtered like the history. Used by the REST API and the pages alike.

Free metadata (an image's `extra`, such as the ingester's `instrument_channel`) becomes one column
per key, after the fixed columns; a key that clashes with a fixed column of either table is named
`extra_<key>`.
CSV streams; Parquet (typed columns, compact for millions of nuclei) is built in memory in row
groups and only imports pyarrow when asked for.
"""
from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from typing import Iterable, Iterator

from flask import Response, stream_with_context
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.api.queries import NUCLEUS_COLUMNS, ResultFilters, all_results, apply_filters
from shared.db.models import Experiment, Image, Job, Nucleus, Result

FORMATS = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
BATCH = 5000

# column -> pyarrow type name; the fixed columns of each table, in order
RESULT_TYPES = {
    "image_id": "string", "job_id": "string", "filename": "string", "condition": "string", "well": "string",
    "plate": "string", "site": "string", "channel": "int64", "pixel_size_um": "float64", "width": "int64",
    "height": "int64", "status": "string", "error": "string", "count": "int64", "model_version": "string",
    "area_mean": "float64", "area_median": "float64", "area_min": "float64", "area_max": "float64",
    "created": "timestamp",
}
IMAGE_COLUMNS = ["image_id", "filename", "condition", "well", "plate", "site", "channel", "pixel_size_um", "created",
                 "model_version"]
NUCLEUS_TYPES = {
    **{c: RESULT_TYPES[c] for c in IMAGE_COLUMNS},
    **{c: "int64" if c == "label" else "float64" for c in NUCLEUS_COLUMNS},
}
RESULT_COLUMNS = list(RESULT_TYPES)
NUCLEI_COLUMNS = list(NUCLEUS_TYPES)


def metadata_keys(session: Session, experiment: Experiment, filters: ResultFilters) -> list[str]:
    """The free metadata keys used by the experiment's (filtered) images, sorted."""
    query = apply_filters(select(Image.extra).join(Job, Job.image_id == Image.id)
                          .where(Image.experiment_id == experiment.id), filters)
    return sorted({key for extra in session.scalars(query) if extra for key in extra})


def _extra_columns(keys: list[str]) -> list[tuple[str, str]]:
    """(key, column name) for each free metadata key, named alike in both tables."""
    fixed = {*RESULT_COLUMNS, *NUCLEI_COLUMNS}
    return [(key, f"extra_{key}" if key in fixed else key) for key in keys]


def _attachment(experiment: Experiment, table: str, fmt: str) -> dict:
    return {"Content-Disposition": f'attachment; filename="experiment-{experiment.id}-{table}.{fmt}"'}


# --- the per-image table -----------------------------------------------------------------------------------------

def results_export(session: Session, experiment: Experiment, filters: ResultFilters, fmt: str) -> Response:
    rows = all_results(session, experiment, filters)
    extras = _extra_columns(metadata_keys(session, experiment, filters))
    columns = RESULT_COLUMNS + [column for _key, column in extras]
    records = [[row[c] for c in RESULT_COLUMNS] + [row["extra"].get(key) for key, _column in extras] for row in rows]
    types = {**RESULT_TYPES, **{column: "string" for _key, column in extras}}
    if fmt == "parquet":
        body = parquet_bytes(columns, types, [records])
    else:
        body = "".join(csv_lines(columns, [records]))
    return Response(body, mimetype=FORMATS[fmt], headers=_attachment(experiment, "results", fmt))


# --- the per-nucleus table ---------------------------------------------------------------------------------------

def _nucleus_batches(session: Session, experiment: Experiment, filters: ResultFilters,
                     extras: list[tuple[str, str]]) -> Iterator[list[list]]:
    query = (select(Image.id, Image.filename, Image.condition, Image.well, Image.plate, Image.site, Image.channel,
                    Image.pixel_size_um, Image.created, Result.model_version, Image.extra,
                    *(getattr(Nucleus, c) for c in NUCLEUS_COLUMNS))
             .join(Job, Job.image_id == Image.id)
             .join(Result, Result.job_id == Job.id)
             .join(Nucleus, Nucleus.result_id == Result.id)
             .where(Image.experiment_id == experiment.id))
    query = apply_filters(query, filters)
    result = session.execute(query.order_by(Image.created, Image.id, Nucleus.label).execution_options(yield_per=BATCH))
    extra_at = len(IMAGE_COLUMNS)
    for batch in result.partitions():
        yield [[*row[:extra_at], *row[extra_at + 1:], *((row[extra_at] or {}).get(key) for key, _ in extras)]
               for row in batch]


def nuclei_export(session: Session, experiment: Experiment, filters: ResultFilters, fmt: str) -> Response:
    extras = _extra_columns(metadata_keys(session, experiment, filters))
    columns = NUCLEI_COLUMNS + [column for _key, column in extras]
    batches = _nucleus_batches(session, experiment, filters, extras)
    headers = _attachment(experiment, "nuclei", fmt)
    if fmt == "parquet":
        types = {**NUCLEUS_TYPES, **{column: "string" for _key, column in extras}}
        return Response(parquet_bytes(columns, types, batches), mimetype=FORMATS[fmt], headers=headers)
    return Response(stream_with_context(csv_lines(columns, batches)), mimetype=FORMATS[fmt], headers=headers)


# --- writers -----------------------------------------------------------------------------------------------------

def _timestamp(value):
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # SQLite hands back naive datetimes written as UTC
    return value


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _timestamp(value).isoformat()
    return value


def csv_lines(columns: list[str], batches: Iterable[list[list]]) -> Iterator[str]:
    """The header, then one chunk of lines per batch (so a long table streams)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    yield buffer.getvalue()
    for batch in batches:
        buffer.seek(0)
        buffer.truncate()
        writer.writerows([_csv_value(v) for v in row] for row in batch)
        yield buffer.getvalue()


def _arrow_type(name: str):
    import pyarrow as pa

    return pa.timestamp("us", tz="UTC") if name == "timestamp" else getattr(pa, name)()


def parquet_bytes(columns: list[str], types: dict[str, str], batches: Iterable[list[list]]) -> bytes:
    """A Parquet file with one row group per batch (an empty table still has its schema)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, _arrow_type(types[c])) for c in columns])
    timestamps = [i for i, c in enumerate(columns) if types[c] == "timestamp"]
    buffer = io.BytesIO()
    with pq.ParquetWriter(buffer, schema, compression="zstd") as writer:
        for batch in batches:
            if not batch:
                continue
            values = list(zip(*batch))
            arrays = [pa.array([_timestamp(v) for v in values[i]] if i in timestamps else values[i], type=schema[i].type)
                      for i in range(len(columns))]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
    return buffer.getvalue()
