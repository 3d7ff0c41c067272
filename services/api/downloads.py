"""Result files for download, used by the API and the pages: the files a result stored in the object store
(label TIFF, overlay PNG, nuclei table), the label image converted for ImageJ/Fiji, QuPath and OME tools,
and an experiment's archive of all of them.

The archive streams: members are written one at a time into a zip that is handed to the response as it
grows, so memory holds one member, whatever the experiment's size.
"""
from __future__ import annotations

import io
import re
import zipfile
from typing import Iterator

from flask import Response, current_app
from sqlalchemy.orm import Session

from services.api.errors import ApiError
from services.api.queries import ResultFilters, experiment_query, result_for
from shared.infra.db.tables import Experiment, Image, JobStatus, Result
from shared.domain.outputs import LABEL_FORMATS
from shared.infra.storage import ObjectNotFound

STORED = {
    "labels.tif": ("labels_key", "image/tiff"),
    "overlay.png": ("overlay_key", "image/png"),
    "nuclei.csv": ("nuclei_csv_key", "text/csv"),
}
# file name -> format name, for the label image converted on request
CONVERTED = {name: fmt for fmt, (name, _media) in LABEL_FORMATS.items() if name not in STORED}
ARTIFACTS = (*STORED, *CONVERTED)
# result link name -> file, beside the contract's labels, overlay and nuclei_csv
CONVERTED_LINKS = {"roiset": "RoiSet.zip", "geojson": "nuclei.geojson", "ome_tiff": "labels.ome.tif"}


def finished_result(session: Session, image: Image) -> Result:
    """The image's result, or 409 saying why there is none yet."""
    job, result = result_for(session, image)
    if result is not None:
        return result
    status = job.status.value if job else "unknown"
    if job is not None and job.status == JobStatus.failed:
        raise ApiError(409, "job_failed", f"segmenting this image failed: {job.error or 'no reason recorded'}",
                       status=status)
    raise ApiError(409, "not_ready", f"no result yet: the job is {status}", status=status)


def _stored(image: Image, key: str, artifact: str) -> bytes:
    try:
        return current_app.extensions["nucleus_store"].get(key)
    except ObjectNotFound:
        raise ApiError(404, "object_missing", f"{artifact} of image {image.id} is missing from the object store") from None


def _stem(filename: str) -> str:
    return filename.rsplit(".", 1)[0] if "." in filename else filename


def artifact_response(session: Session, image: Image, artifact: str) -> Response:
    if artifact not in ARTIFACTS:
        raise ApiError(404, "not_found", f"no file {artifact!r}; there are {', '.join(ARTIFACTS)}")
    result = finished_result(session, image)
    if artifact in STORED:
        attribute, mimetype = STORED[artifact]
        data = _stored(image, getattr(result, attribute), artifact)
    else:
        data, mimetype = converted_labels(image, result, CONVERTED[artifact])
    stem = _stem(image.filename).encode("ascii", "replace").decode().replace('"', "_")
    return Response(data, mimetype=mimetype,
                    headers={"Content-Disposition": f'inline; filename="{stem}_{artifact}"',
                             "Cache-Control": "private, max-age=3600"})


def converted_labels(image: Image, result: Result, fmt: str) -> tuple[bytes, str]:
    """The result's label image in one of shared.domain.outputs.LABEL_FORMATS, and its media type."""
    import tifffile

    from shared.domain.outputs import label_file

    labels = tifffile.imread(io.BytesIO(_stored(image, result.labels_key, "labels.tif")))
    table = _stored(image, result.nuclei_csv_key, "nuclei.csv").decode() if fmt == "geojson" else None
    return label_file(fmt, labels, image.pixel_size_um, table), LABEL_FORMATS[fmt][1]


# --- an experiment's archive -------------------------------------------------------------------------------------

class _ZipSink(io.RawIOBase):
    """Where zipfile writes; what it wrote is taken out as it goes. Not seekable, so zipfile streams each
    member (sizes in a data descriptor after it)."""

    def __init__(self):
        self._chunks: list[bytes] = []
        self._offset = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._chunks.append(bytes(data))
        self._offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self._offset

    def take(self) -> bytes:
        data, self._chunks = b"".join(self._chunks), []
        return data


def _archive_name(name: str) -> str:
    """A folder name safe on every file system."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"


def _unique_stem(filename: str, image_id: str, taken: set[str]) -> str:
    """The image's stem, made unique in the archive with its id when two images share it."""
    stem = _archive_name(_stem(filename))
    if stem in taken:
        stem = f"{stem}-{image_id}"
    taken.add(stem)
    return stem


def experiment_archive(session: Session, experiment: Experiment, filters: ResultFilters) -> Response:
    """A zip of the experiment's (filtered) results: results.csv and nuclei.csv, and per image its label TIFF,
    overlay PNG and nuclei table; a file missing from the object store is listed in MISSING.txt."""
    from services.api.exports import nuclei_export, results_export, streamed_rows

    store = current_app.extensions["nucleus_store"]
    folder = _archive_name(experiment.name)
    query = experiment_query([Image.id, Image.filename, Result.labels_key, Result.overlay_key, Result.nuclei_csv_key],
                             experiment, filters, with_result=True).order_by(Image.created, Image.id)
    tables = {"results.csv": results_export(session, experiment, filters, "csv"),
              "nuclei.csv": nuclei_export(session, experiment, filters, "csv")}

    images = streamed_rows(session, query)

    def members() -> Iterator[bytes]:
        # each table and the image list read through connections of their own, returned when the
        # archive ends or is closed (exports.streamed_rows)
        try:
            yield from zipped()
        finally:
            images.close()
            for response in tables.values():
                response.close()

    def zipped() -> Iterator[bytes]:
        sink = _ZipSink()
        missing, taken = [], set()
        with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, response in tables.items():
                with archive.open(f"{folder}/{name}", "w", force_zip64=True) as member:
                    for chunk in response.iter_encoded():
                        member.write(chunk)
                        yield sink.take()
            for image_id, filename, labels_key, overlay_key, nuclei_key in (row for batch in images for row in batch):
                stem = _unique_stem(filename, image_id, taken)
                for key, path, compress in ((labels_key, f"labels/{stem}_labels.tif", zipfile.ZIP_STORED),
                                            (overlay_key, f"overlays/{stem}_overlay.png", zipfile.ZIP_STORED),
                                            (nuclei_key, f"nuclei/{stem}_nuclei.csv", zipfile.ZIP_DEFLATED)):
                    try:
                        data = store.get(key)
                    except ObjectNotFound:
                        missing.append(f"{path} (image {image_id}, object {key})")
                        continue
                    archive.writestr(f"{folder}/{path}", data, compress_type=compress)
                    yield sink.take()
            if missing:
                archive.writestr(f"{folder}/MISSING.txt", "Missing from the object store:\n" + "\n".join(missing) + "\n")
        yield sink.take()

    return Response(members(), mimetype="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{folder}.zip"',
                             "Cache-Control": "private, no-store"})
