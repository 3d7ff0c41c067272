"""The OpenAPI 3 document for /api/v1, written by hand beside the routes it describes."""
from __future__ import annotations

from copy import deepcopy


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return {"$ref": f"#/components/responses/{description}"}


NULLABLE_STRING = {"type": "string", "nullable": True}
NULLABLE_NUMBER = {"type": "number", "nullable": True}
NULLABLE_INT = {"type": "integer", "nullable": True}
STATUS = {"type": "string", "enum": ["queued", "running", "done", "failed"]}
# What the server accepts as an experiment or project name: some non-blank text, no '/', no control characters.
NAME = {"type": "string", "minLength": 1, "maxLength": 200,
        "pattern": "^[^/\\u0000-\\u001f]*[^/\\u0000-\\u001f\\s][^/\\u0000-\\u001f]*$"}

SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                                 "additionalProperties": True}},
    },
    "Experiment": {
        "type": "object", "required": ["id", "name", "project"],
        "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "project": {"type": "string"},
                       "created": NULLABLE_STRING},
    },
    "ExperimentList": {
        "type": "object", "required": ["experiments", "total", "page", "per_page"],
        "properties": {"experiments": {"type": "array", "items": _ref("Experiment")}, "total": {"type": "integer"},
                       "page": {"type": "integer"}, "per_page": {"type": "integer"}},
    },
    "NewExperiment": {
        "type": "object", "required": ["name"],
        "properties": {"name": NAME,
                       "project": {**NAME, "description": "defaults to the token's project, else `default`"}},
    },
    "UploadForm": {
        "type": "object", "required": ["file"],
        "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1,
                     "description": "one or more images: PNG, JPEG, TIFF (OME-TIFF, ImageJ), CZI, ND2 or LIF"},
            "condition": {"type": "string", "maxLength": 200}, "well": {"type": "string", "maxLength": 20},
            "plate": {"type": "string", "maxLength": 200}, "site": {"type": "string", "maxLength": 20},
            "channel": {"type": "string", "maxLength": 200,
                        "description": "the nuclear channel: its name in the file's metadata (case-insensitive, e.g. "
                                       "Hoechst, DAPI) or its index from 0. Required for a multi-channel fluorescence "
                                       "file (400 `channel_required` naming its channels); an unknown name is 400 "
                                       "`bad_channel` listing them; an RGB photo is kept as colour without one"},
            "z": {"type": "string", "pattern": "^(max|[0-9]+)$", "default": "max",
                  "description": "Z stack: `max` (maximum-intensity projection) or a plane index from 0"},
            "t": {"type": "integer", "minimum": 0, "default": 0, "description": "time point of a time series"},
            "scene": {"type": "string", "maxLength": 200, "default": "0",
                      "description": "scene (series, position) of a multi-scene file: its index from 0 or its name"},
            "pixel_size_um": {"type": "number", "exclusiveMinimum": True, "minimum": 0,
                              "description": "overrides the pixel size in the file's metadata; zero or below is 400"},
        },
    },
    "UploadedImage": {
        "type": "object", "required": ["id", "job_id", "sha256", "status", "duplicate"],
        "properties": {"id": {"type": "string"}, "job_id": {"type": "string"}, "sha256": {"type": "string"},
                       "status": STATUS, "duplicate": {"type": "boolean"}, "filename": {"type": "string"}},
    },
    "Upload": {
        "type": "object", "required": ["images"],
        "properties": {"images": {"type": "array", "items": _ref("UploadedImage")}},
    },
    "Job": {
        "type": "object", "required": ["id", "status", "image_id", "error"],
        "properties": {"id": {"type": "string"}, "status": STATUS, "image_id": {"type": "string"},
                       "error": NULLABLE_STRING, "attempts": {"type": "integer"}, "created": NULLABLE_STRING,
                       "started": NULLABLE_STRING, "finished": NULLABLE_STRING,
                       "model_version": {**NULLABLE_STRING, "description": "the version a re-segmentation asked "
                                                                          "for; null: the project's active one"}},
    },
    "Image": {
        "type": "object", "required": ["id", "experiment", "filename", "sha256", "status", "job_id"],
        "properties": {
            "id": {"type": "string"}, "experiment": {"type": "string"}, "filename": {"type": "string"},
            "sha256": {"type": "string"}, "width": {"type": "integer"}, "height": {"type": "integer"},
            "size_bytes": {"type": "integer"}, "condition": NULLABLE_STRING, "well": NULLABLE_STRING,
            "plate": NULLABLE_STRING, "site": NULLABLE_STRING, "channel": NULLABLE_INT,
            "pixel_size_um": NULLABLE_NUMBER, "created": NULLABLE_STRING, "job_id": NULLABLE_STRING,
            "status": {**STATUS, "nullable": True}, "error": NULLABLE_STRING, "count": NULLABLE_INT,
            "model_version": NULLABLE_STRING,
        },
    },
    "AreaSummary": {
        "type": "object", "required": ["mean", "median", "min", "max"],
        "properties": {k: NULLABLE_NUMBER for k in ("mean", "median", "min", "max")},
    },
    "Result": {
        "type": "object", "required": ["image_id", "count", "model_version", "area", "links"],
        "properties": {
            "image_id": {"type": "string"}, "job_id": {"type": "string"}, "count": {"type": "integer"},
            "model_version": {"type": "string"}, "area": _ref("AreaSummary"),
            "seconds_model": NULLABLE_NUMBER, "seconds_total": NULLABLE_NUMBER, "created": NULLABLE_STRING,
            "links": {"type": "object", "required": ["labels", "overlay", "nuclei_csv"],
                      "properties": {"labels": {"type": "string"}, "overlay": {"type": "string"},
                                     "nuclei_csv": {"type": "string"},
                                     "roiset": {"type": "string", "description": "ImageJ/Fiji RoiSet.zip"},
                                     "geojson": {"type": "string", "description": "QuPath GeoJSON"},
                                     "ome_tiff": {"type": "string",
                                                  "description": "OME-TIFF labels with the pixel size"}}},
        },
    },
    "ResultRow": {
        "type": "object",
        "required": ["image_id", "filename", "condition", "well", "plate", "site", "channel", "pixel_size_um",
                     "status", "count", "model_version", "created"],
        "properties": {
            "image_id": {"type": "string"}, "job_id": {"type": "string"}, "filename": {"type": "string"},
            "condition": NULLABLE_STRING, "well": NULLABLE_STRING, "plate": NULLABLE_STRING,
            "site": NULLABLE_STRING, "channel": NULLABLE_INT, "pixel_size_um": NULLABLE_NUMBER,
            "width": {"type": "integer"}, "height": {"type": "integer"}, "status": STATUS, "error": NULLABLE_STRING,
            "count": NULLABLE_INT, "model_version": NULLABLE_STRING, "area_mean": NULLABLE_NUMBER,
            "area_median": NULLABLE_NUMBER, "area_min": NULLABLE_NUMBER, "area_max": NULLABLE_NUMBER,
            "created": NULLABLE_STRING,
        },
    },
    "ResultList": {
        "type": "object", "required": ["results", "total", "page", "per_page"],
        "properties": {"results": {"type": "array", "items": _ref("ResultRow")}, "total": {"type": "integer"},
                       "page": {"type": "integer"}, "per_page": {"type": "integer"}},
    },
    "Health": {
        "type": "object", "required": ["status"],
        "properties": {"status": {"type": "string"}, "checks": {"type": "object", "additionalProperties": {"type": "string"}}},
    },
    "LabelForm": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary",
                                "description": "a 16-bit PNG or TIFF label image the size of the image (0 = "
                                               "background, 1..N = nuclei), a zip of per-nucleus binary masks, an "
                                               "ImageJ/Fiji RoiSet.zip or .roi (one nucleus per area ROI), or QuPath "
                                               "GeoJSON in the image's pixel coordinates (detections, else "
                                               "annotations; a cell's nucleusGeometry); at most "
                                               "NUCLEUS_MAX_LABEL_BYTES"}},
    },
    "Label": {
        "type": "object", "required": ["id", "image_id", "count", "sha256"],
        "properties": {"id": {"type": "string"}, "image_id": {"type": "string"}, "count": {"type": "integer"},
                       "sha256": {"type": "string", "description": "of the stored, normalised label image"},
                       "created": NULLABLE_STRING, "filename": {"type": "string"},
                       "duplicate": {"type": "boolean"},
                       "links": {"type": "object", "properties": {"labels": {"type": "string"}}}},
    },
    "LabelList": {
        "type": "object", "required": ["labels"],
        "properties": {"labels": {"type": "array", "items": _ref("Label")}, "total": {"type": "integer"},
                       "page": {"type": "integer"}, "per_page": {"type": "integer"}},
    },
    "NewTrainingRun": {
        "type": "object",
        "properties": {"epochs": {"type": "integer", "minimum": 1, "maximum": 100, "default": 1},
                       "force_promote": {"type": "boolean", "default": False,
                                         "description": "activate the new version even if it regresses"},
                       "project": {"type": "string", "minLength": 1,
                                   "description": "the project whose line is trained (default: "
                                                   "the token's project, else default)"}},
    },
    "TrainingRunCreated": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
    "TrainingRun": {
        "type": "object", "required": ["id", "status", "progress", "metrics", "version", "promoted"],
        "properties": {"id": {"type": "string"}, "status": STATUS,
                       "progress": {"type": "number", "minimum": 0, "maximum": 1},
                       "metrics": {"type": "object", "additionalProperties": True},
                       "version": {**NULLABLE_STRING, "description": "exactly what later results report as "
                                                                     "model_version"},
                       "promoted": {"type": "boolean", "nullable": True}, "error": NULLABLE_STRING,
                       "project": {"type": "string"},
                       "decision": {**NULLABLE_STRING, "description": "promoted, rejected, awaiting_admin or forced; "
                                                                      "activated_by_admin once an admin activated "
                                                                      "an awaiting run's version (metrics: "
                                                                      "activated_by, activated_at); metrics holds "
                                                                      "the rule and each check's before/after numbers"},
                       "epochs": {"type": "integer"}, "force_promote": {"type": "boolean"},
                       "created": NULLABLE_STRING, "started": NULLABLE_STRING, "finished": NULLABLE_STRING},
    },
    "TrainingRunList": {
        "type": "object", "required": ["training_runs", "total", "page", "per_page"],
        "properties": {"training_runs": {"type": "array", "items": _ref("TrainingRun")},
                       "total": {"type": "integer"}, "page": {"type": "integer"}, "per_page": {"type": "integer"}},
    },
    "Model": {
        "type": "object", "required": ["version", "parent", "created", "training_summary", "metrics", "active"],
        "properties": {"version": {"type": "string"}, "parent": NULLABLE_STRING, "created": NULLABLE_STRING,
                       "training_summary": {"type": "object", "additionalProperties": True},
                       "metrics": {"type": "object", "additionalProperties": True},
                       "active": {"type": "boolean", "description": "active in the project asked about"},
                       "project": {**NULLABLE_STRING, "description": "the project whose line it was trained in"},
                       "active_in": {"type": "array", "items": {"type": "string"}}},
    },
    "ActivateModel": {"type": "object", "properties": {"project": {"type": "string", "minLength": 1,
                                                                   "default": "default"}}},
    "Resegment": {
        "type": "object",
        "properties": {"version": {"type": "string", "description": "default: the project's active version"},
                       "condition": {"type": "string"}, "well": {"type": "string"}, "status": STATUS},
    },
    "ResegmentQueued": {
        "type": "object", "required": ["version", "jobs", "skipped"],
        "properties": {"experiment": {"type": "string"}, "version": {"type": "string"},
                       "jobs": {"type": "integer", "description": "new jobs queued"},
                       "skipped": {"type": "integer", "description": "images being segmented, or already "
                                                                     "segmented by that version"},
                       "job_ids": {"type": "array", "items": {"type": "string"}}},
    },
    "VersionCounts": {
        "type": "object", "required": ["versions"],
        "properties": {"experiment": {"type": "string"}, "total": {"type": "integer"},
                       "versions": {"type": "array", "items": {"type": "object", "properties": {
                           "model_version": {"type": "string"}, "images": {"type": "integer"},
                           "count_total": {"type": "integer"}, "count_mean": NULLABLE_NUMBER,
                           "first": NULLABLE_STRING, "last": NULLABLE_STRING}}}},
    },
    "ImageResultList": {
        "type": "object", "required": ["results", "total", "page", "per_page"],
        "properties": {"results": {"type": "array", "items": _ref("Result")}, "total": {"type": "integer"},
                       "page": {"type": "integer"}, "per_page": {"type": "integer"}},
    },
    "ModelList": {
        "type": "object", "required": ["models", "total", "page", "per_page"],
        "properties": {"models": {"type": "array", "items": _ref("Model")}, "total": {"type": "integer"},
                       "page": {"type": "integer"}, "per_page": {"type": "integer"}},
    },
}

RESPONSES = {
    name: _json(_ref("Error"), description) for name, description in {
        "BadRequest": "Bad input; `error.message` says what", "Unauthorized": "No token, or an unknown or revoked one",
        "Forbidden": "The token's role may not do this", "NotFound": "No such thing, or not visible to this token",
        "Conflict": "Conflicts with the current state", "TooLarge": "A file or image is over the limit",
        "Unavailable": "A dependency is unreachable; retry after `Retry-After` seconds",
    }.items()
}
RESPONSES["Unavailable"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
RESPONSES["RateLimited"] = _json(_ref("Error"), "Over a rate limit (uploads, label uploads, exports, training runs "
                                                "per token) or too many unknown tokens from this client; retry after "
                                                "`Retry-After` seconds")
RESPONSES["RateLimited"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}

PARAMETERS = {
    "page": {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 1}},
    "per_page": {"name": "per_page", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
    "name": {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
             "description": "experiment name"},
    "image_id": {"name": "image_id", "in": "path", "required": True, "schema": {"type": "string"}},
    "job_id": {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}},
    "label_id": {"name": "label_id", "in": "path", "required": True, "schema": {"type": "string"}},
    "run_id": {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}},
    "version": {"name": "version", "in": "path", "required": True, "schema": {"type": "string"},
                "description": "a model version, as results report it in model_version"},
    "condition": {"name": "condition", "in": "query", "schema": {"type": "string"}},
    "result_version": {"name": "version", "in": "query", "schema": {"type": "string"},
                       "description": "results made by this model version (default: the newest)"},
    "project": {"name": "project", "in": "query", "schema": {"type": "string"},
                "description": "a project's name (default: the token's project, else default)"},
    "well": {"name": "well", "in": "query", "schema": {"type": "string"}},
    "status": {"name": "status", "in": "query", "schema": STATUS},
    "created_from": {"name": "created_from", "in": "query", "schema": {"type": "string"},
                     "description": "uploaded at or after this ISO 8601 date/time (UTC when no zone)"},
    "created_to": {"name": "created_to", "in": "query", "schema": {"type": "string"},
                   "description": "uploaded before this ISO 8601 date/time"},
    "sort": {"name": "sort", "in": "query", "schema": {"type": "string", "enum": [
        p + k for k in ("created", "filename", "condition", "well", "count", "status") for p in ("", "-")]}},
    "format": {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "csv", "parquet"]},
               "description": "json: a page; csv or parquet: every matching row, with a column per free metadata key"},
}


def _params(*names: str) -> list[dict]:
    return [{"$ref": f"#/components/parameters/{n}"} for n in names]


AUTH_ERRORS = {"401": _error("Unauthorized"), "403": _error("Forbidden"), "429": _error("RateLimited"),
               "503": _error("Unavailable")}


def _file(mimetype: str, description: str) -> dict:
    return {
        "get": {"summary": description, "tags": ["images"], "parameters": _params("image_id"),
                "responses": {"200": {"description": description,
                                      "content": {mimetype: {"schema": {"type": "string", "format": "binary"}}}},
                              "404": _error("NotFound"), "409": _error("Conflict"), **AUTH_ERRORS}},
    }


PATHS = {
    "/experiments": {
        "post": {"summary": "Create an experiment", "tags": ["experiments"],
                 "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("NewExperiment")}}},
                 "responses": {"201": _json(_ref("Experiment"), "Created"), "400": _error("BadRequest"),
                               "409": _error("Conflict"), **AUTH_ERRORS}},
        "get": {"summary": "List the experiments this token may see", "tags": ["experiments"],
                "parameters": _params("page", "per_page"),
                "responses": {"200": _json(_ref("ExperimentList"), "A page of experiments"),
                              "400": _error("BadRequest"), **AUTH_ERRORS}},
    },
    "/experiments/{name}": {
        "get": {"summary": "One experiment", "tags": ["experiments"], "parameters": _params("name"),
                "responses": {"200": _json(_ref("Experiment"), "The experiment"), "404": _error("NotFound"),
                              **AUTH_ERRORS}},
    },
    "/experiments/{name}/images": {
        "post": {
            "summary": "Upload images; each is fully decoded before any is accepted", "tags": ["images"],
            "parameters": _params("name"),
            "requestBody": {"required": True, "content": {"multipart/form-data": {
                "schema": _ref("UploadForm"), "encoding": {"file": {"contentType": "application/octet-stream"}}}}},
            "responses": {"202": _json(_ref("Upload"), "Accepted; one job per new image"),
                          "200": _json(_ref("Upload"), "Every file was already in the experiment (duplicates)"),
                          "400": _error("BadRequest"), "404": _error("NotFound"), "413": _error("TooLarge"),
                          "429": _error("RateLimited"), **AUTH_ERRORS},
        },
    },
    "/experiments/{name}/results": {
        "get": {"summary": "One row per image with metadata, status, count and model version",
                "tags": ["results"],
                "parameters": _params("name", "condition", "well", "status", "created_from", "created_to", "sort",
                                      "result_version", "page", "per_page", "format"),
                "responses": {"200": {"description": "A page of results (JSON), or every matching row (CSV, Parquet)",
                                      "content": {"application/json": {"schema": _ref("ResultList")},
                                                  "text/csv": {"schema": {"type": "string"}},
                                                  "application/vnd.apache.parquet": {
                                                      "schema": {"type": "string", "format": "binary"}}}},
                              "400": _error("BadRequest"), "404": _error("NotFound"), **AUTH_ERRORS}},
    },
    "/experiments/{name}/nuclei.csv": {
        "get": {"summary": "Every nucleus of the experiment with its image's metadata", "tags": ["results"],
                "parameters": _params("name", "condition", "well", "status", "created_from", "created_to"),
                "responses": {"200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
                              "400": _error("BadRequest"), "404": _error("NotFound"), **AUTH_ERRORS}},
    },
    "/experiments/{name}/nuclei.parquet": {
        "get": {"summary": "The same table as nuclei.csv, as Parquet with typed columns", "tags": ["results"],
                "parameters": _params("name", "condition", "well", "status", "created_from", "created_to"),
                "responses": {"200": {"description": "Parquet", "content": {"application/vnd.apache.parquet": {
                                  "schema": {"type": "string", "format": "binary"}}}},
                              "400": _error("BadRequest"), "404": _error("NotFound"), **AUTH_ERRORS}},
    },
    "/experiments/{name}/archive.zip": {
        "get": {"summary": "A zip of the experiment's (filtered) results: results.csv, nuclei.csv, and per image its "
                           "label TIFF, overlay PNG and nuclei table (streamed; files missing from the object store "
                           "are listed in MISSING.txt)", "tags": ["results"],
                "parameters": _params("name", "condition", "well", "status", "created_from", "created_to"),
                "responses": {"200": {"description": "Zip", "content": {"application/zip": {
                                  "schema": {"type": "string", "format": "binary"}}}},
                              "400": _error("BadRequest"), "404": _error("NotFound"), **AUTH_ERRORS}},
    },
    "/jobs/{job_id}": {
        "get": {"summary": "A job's status", "tags": ["jobs"], "parameters": _params("job_id"),
                "responses": {"200": _json(_ref("Job"), "The job"), "404": _error("NotFound"), **AUTH_ERRORS}},
    },
    "/images/{image_id}": {
        "get": {"summary": "An image's metadata and status", "tags": ["images"], "parameters": _params("image_id"),
                "responses": {"200": _json(_ref("Image"), "The image"), "404": _error("NotFound"), **AUTH_ERRORS}},
    },
    "/images/{image_id}/result": {
        "get": {"summary": "An image's newest result (or the newest made by ?version=); 409 while it has none "
                           "(error.code not_ready or job_failed)",
                "tags": ["images"], "parameters": _params("image_id", "result_version"),
                "responses": {"200": _json(_ref("Result"), "The result"), "404": _error("NotFound"),
                              "409": _error("Conflict"), **AUTH_ERRORS}},
    },
    "/images/{image_id}/results": {
        "get": {"summary": "Every result of the image, newest first (one per model version it was run with)",
                "tags": ["images"], "parameters": _params("image_id", "page", "per_page"),
                "responses": {"200": _json(_ref("ImageResultList"), "Results"), "400": _error("BadRequest"),
                              "404": _error("NotFound"), **AUTH_ERRORS}},
    },
    "/experiments/{name}/resegment": {
        "post": {"summary": "Segment the experiment's images (or those matching condition/well/status) again with "
                            "a model version (uploader); images being segmented or already segmented by it are "
                            "skipped", "tags": ["results"], "parameters": _params("name"),
                 "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("Resegment")}}},
                 "responses": {"202": _json(_ref("ResegmentQueued"), "Queued"), "400": _error("BadRequest"),
                               "404": _error("NotFound"), "409": _error("Conflict"), **AUTH_ERRORS}},
    },
    "/experiments/{name}/versions": {
        "get": {"summary": "Per model version that segmented the experiment: images and nucleus counts",
                "tags": ["results"], "parameters": _params("name", "condition", "well"),
                "responses": {"200": _json(_ref("VersionCounts"), "Counts per version"), "404": _error("NotFound"),
                              **AUTH_ERRORS}},
    },
    "/images/{image_id}/labels.tif": _file("image/tiff", "Label image: 16-bit TIFF (32-bit above 65535 nuclei), 0 = background"),
    "/images/{image_id}/overlay.png": _file("image/png", "Outlines of the nuclei on the image"),
    "/images/{image_id}/nuclei.csv": _file("text/csv", "One row per nucleus"),
    "/images/{image_id}/RoiSet.zip": _file("application/zip", "ImageJ/Fiji ROI set: one polygon ROI per nucleus, "
                                           "named by its label"),
    "/images/{image_id}/nuclei.geojson": _file("application/geo+json", "QuPath GeoJSON: a FeatureCollection of "
                                               "detections (one Polygon per nucleus) with their measurements"),
    "/images/{image_id}/labels.ome.tif": _file("image/tiff", "Label image as OME-TIFF, with the physical pixel size "
                                               "(µm) when the image has one"),
    "/images/{image_id}/labels": {
        "post": {
            "summary": "Attach labels (uploader); the same labels for the same image again answer 200 with "
                       "the existing row", "tags": ["training"], "parameters": _params("image_id"),
            "requestBody": {"required": True, "content": {"multipart/form-data": {
                "schema": _ref("LabelForm"), "encoding": {"file": {"contentType": "application/octet-stream"}}}}},
            "responses": {"201": _json(_ref("Label"), "Stored"), "200": _json(_ref("Label"), "Already stored"),
                          "400": _error("BadRequest"), "404": _error("NotFound"), "413": _error("TooLarge"),
                          **AUTH_ERRORS},
        },
        "get": {"summary": "The image's label uploads, newest first", "tags": ["training"],
                "parameters": _params("image_id"),
                "responses": {"200": _json(_ref("LabelList"), "Labels"), "404": _error("NotFound"), **AUTH_ERRORS}},
    },
    "/experiments/{name}/labels": {
        "get": {"summary": "Every label uploaded for the experiment's images", "tags": ["training"],
                "parameters": _params("name", "page", "per_page"),
                "responses": {"200": _json(_ref("LabelList"), "A page of labels"), "400": _error("BadRequest"),
                              "404": _error("NotFound"), **AUTH_ERRORS}},
    },
    "/labels/{label_id}/labels.png": {
        "get": {"summary": "A stored label image: 16-bit PNG (32-bit TIFF above 65535 nuclei)", "tags": ["training"],
                "parameters": _params("label_id"),
                "responses": {"200": {"description": "The label image",
                                      "content": {"image/png": {"schema": {"type": "string", "format": "binary"}},
                                                  "image/tiff": {"schema": {"type": "string", "format": "binary"}}}},
                              "404": _error("NotFound"), **AUTH_ERRORS}},
    },
    "/training-runs": {
        "post": {"summary": "Start a training run (admin)", "tags": ["training"],
                 "requestBody": {"required": False,
                                 "content": {"application/json": {"schema": _ref("NewTrainingRun")}}},
                 "responses": {"202": _json(_ref("TrainingRunCreated"), "Queued"), "400": _error("BadRequest"),
                               "404": _error("NotFound"), **AUTH_ERRORS}},
        "get": {"summary": "Training runs, newest first", "tags": ["training"],
                "parameters": _params("page", "per_page"),
                "responses": {"200": _json(_ref("TrainingRunList"), "A page of runs"), "400": _error("BadRequest"),
                              **AUTH_ERRORS}},
    },
    "/training-runs/{run_id}": {
        "get": {"summary": "A training run's status, progress, metrics and the version it produced",
                "tags": ["training"], "parameters": _params("run_id"),
                "responses": {"200": _json(_ref("TrainingRun"), "The run"), "404": _error("NotFound"),
                              **AUTH_ERRORS}},
    },
    "/models": {
        "get": {"summary": "Every model version, newest first; `active` marks the project's active one",
                "tags": ["models"], "parameters": _params("project", "page", "per_page"),
                "responses": {"200": _json(_ref("ModelList"), "A page of model versions"),
                              "400": _error("BadRequest"), "404": _error("NotFound"), **AUTH_ERRORS}},
    },
    "/models/{version}/activate": {
        "post": {"summary": "Make this version the active model of a project (admin); an older one rolls back. "
                            "Workers switch on that project's next job", "tags": ["models"],
                 "parameters": _params("version"),
                 "requestBody": {"required": False,
                                 "content": {"application/json": {"schema": _ref("ActivateModel")}}},
                 "responses": {"200": _json(_ref("Model"), "Now active"), "400": _error("BadRequest"),
                               "404": _error("NotFound"),
                               "409": _error("Conflict"), **AUTH_ERRORS}},
    },
    "/openapi.json": {
        "get": {"summary": "This document", "tags": ["meta"],
                "responses": {"200": {"description": "OpenAPI 3 document",
                                      "content": {"application/json": {"schema": {"type": "object"}}}},
                              **AUTH_ERRORS}},
    },
}

DOCUMENT = {
    "openapi": "3.0.3",
    "info": {"title": "nucleus", "version": "1",
             "description": "Find, count and measure cell nuclei in microscope images. Every route needs "
                            "`Authorization: Bearer <token>` (tokens from `nucleus token create`). Roles: viewer reads, "
                            "uploader also creates experiments and uploads, admin does everything. A token tied to a "
                            "project sees only that project; things it may not see answer 404."},
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearer": []}],
    "paths": PATHS,
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": SCHEMAS, "responses": RESPONSES, "parameters": PARAMETERS,
    },
}


def openapi_document() -> dict:
    return deepcopy(DOCUMENT)


# -- the document as a page (/api/docs) -------------------------------------------------------------
METHODS = ("get", "post", "put", "patch", "delete")


def _type_of(schema: dict) -> dict:
    """A schema as text for the page, with the component it refers to (for a link), if any."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return {"text": name, "ref": name}
    if schema.get("type") == "array":
        inner = _type_of(schema.get("items") or {})
        return {"text": f"array of {inner['text']}", "ref": inner["ref"]}
    text = schema.get("type", "any")
    if schema.get("format"):
        text += f" ({schema['format']})"
    if schema.get("enum"):
        text += ": " + " | ".join(str(v) for v in schema["enum"])
    if schema.get("nullable"):
        text += ", nullable"
    return {"text": text, "ref": None}


def _text(markdown: str) -> "Markup":
    """Escaped text with its `code` spans as <code> (the document's descriptions use them)."""
    import re

    from markupsafe import Markup, escape

    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(markdown or ""))))


def _resolve(item: dict, document: dict) -> dict:
    ref = item.get("$ref")
    if not ref:
        return item
    section, name = ref.split("/")[-2:]
    return document["components"][section][name]


def docs_view(document: dict | None = None) -> dict:
    """What /api/docs shows: the operations grouped by tag (parameters, request body, responses resolved)
    and the schemas with their properties."""
    document = document or openapi_document()
    tags: dict[str, list] = {}
    for path, item in document["paths"].items():
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            parameters = []
            for parameter in (_resolve(p, document) for p in operation.get("parameters", [])):
                parameters.append({"name": parameter["name"], "in": parameter["in"],
                                   "required": parameter.get("required", False),
                                   "type": _type_of(parameter.get("schema") or {}),
                                   "description": _text(parameter.get("description", ""))})
            body = operation.get("requestBody")
            bodies = [{"media": media, "type": _type_of(content.get("schema") or {})}
                      for media, content in (body or {}).get("content", {}).items()]
            responses = []
            for status, response in operation.get("responses", {}).items():
                resolved = _resolve(response, document)
                responses.append({"status": status, "description": _text(resolved.get("description", "")),
                                  "media": [{"media": media, "type": _type_of(content.get("schema") or {})}
                                            for media, content in resolved.get("content", {}).items()],
                                  "headers": sorted(resolved.get("headers", {}))})
            tag = (operation.get("tags") or ["other"])[0]
            tags.setdefault(tag, []).append({
                "id": f"{method}-{path}".replace("/", "-").replace("{", "").replace("}", "").replace(".", "-"),
                "method": method.upper(), "path": document["servers"][0]["url"] + path,
                "summary": _text(operation.get("summary", "")), "parameters": parameters,
                "body": bodies, "body_required": bool(body and body.get("required")), "responses": responses})
    schemas = []
    for name, schema in document["components"]["schemas"].items():
        required = set(schema.get("required", []))
        schemas.append({"name": name, "description": _text(schema.get("description", "")), "type": _type_of(schema),
                        "properties": [{"name": key, "required": key in required, "type": _type_of(value),
                                        "description": _text(value.get("description", ""))}
                                       for key, value in schema.get("properties", {}).items()]})
    info = {**document["info"], "description": _text(document["info"].get("description", ""))}
    return {"info": info, "openapi": document["openapi"], "tags": tags, "schemas": schemas}
