"""The pages a scientist uses: sign in, experiments, an experiment's history, one image's result,
its label uploads, and the models page (versions, activation, training runs)."""
from __future__ import annotations

from urllib.parse import urlparse

from flask import (
    Response, current_app, flash, g, jsonify, redirect, render_template, request, session, url_for,
)
from sqlalchemy import select

from services.api.access import get_experiment, get_image, require_role, visible
from services.api.database import db
from services.api.downloads import ARTIFACTS, artifact_response, experiment_archive
from services.api.errors import ApiError
from services.api.intake import accept_upload
from services.api.labelling import accept_label_and_maybe_train, label_file, labels_of_image
from services.api.model_versions import activate_version, model_lines, page_of_models, requested_project
from services.api.limits import RateLimited, check_upload_rate, count_auth_failure
from services.api.experiments import create_experiment, valid_name
from services.api.exports import nuclei_export, results_export
from services.api.queries import (
    Histogram, Page, ResultFilters, area_histogram, count_rows, counts_by_condition, mean_count_by_well, nucleus_rows,
    page_from_request, page_of_results, result_for,
)
from services.api.resegmentation import FILTER_FIELDS as RESEGMENT_FILTERS, parse_request as parse_resegment
from services.api.resegmentation import resegment as resegment_experiment
from services.api.training_runs import (
    OPEN, create_run, page_of_runs, parse_run_request, project_for_run, run_json,
)
from services.api.web import web
from services.api.web.editor import display_png, editable, raw_ids_gzip, starting_labels
from services.api.web.sessions import end_session, start_session
from services.api.web.plots import area_histogram_png, counts_by_condition_png, plate_heatmap_png
from services.api.web.marker_plots import marker_by_condition, marker_choices, marker_png, parse_threshold
from shared.infra.auth import verify_token
from shared.infra.db.tables import Experiment, JobStatus, Project

NUCLEI_SHOWN = 500
PENDING = {JobStatus.queued.value, JobStatus.running.value}


def _png(data: bytes) -> Response:
    return Response(data, mimetype="image/png", headers={"Cache-Control": "no-store"})


def _safe_next(target: str | None) -> str:
    """Only same-site paths: never redirect someone elsewhere after sign-in."""
    if not target:
        return url_for("web.index")
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("web.index")
    return target


@web.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "POST":
        raw = (request.form.get("token") or "").strip()
        token = verify_token(db(), raw)
        if token is None:
            try:
                count_auth_failure(raw)
            except RateLimited as exc:
                flash(exc.message, "error")
                return render_template("login.html", next=request.form.get("next", "")), 429, exc.headers
            flash("That token is unknown or revoked.", "error")
            return render_template("login.html", next=request.form.get("next", "")), 401
        start_session(token)
        return redirect(_safe_next(request.form.get("next")), code=303)
    return render_template("login.html", next=request.args.get("next", ""))


@web.post("/logout")
def logout():
    """Only a form on this site signs someone out (POST with the CSRF token, checked by the guard)."""
    end_session()
    return redirect(url_for("web.login"), code=303)


@web.get("/")
def index():
    page = page_from_request()
    query = visible(select(Experiment).join(Project, Project.id == Experiment.project_id))
    total = count_rows(db(), query)
    experiments = db().scalars(query.order_by(Experiment.created.desc(), Experiment.id.desc())
                               .offset(page.offset).limit(page.per_page)).all()
    return render_template("index.html", experiments=experiments, total=total, page=page)


@web.post("/experiments")
def new_experiment():
    require_role("uploader")
    try:
        name = valid_name(request.form.get("name"), "name")
        project = (request.form.get("project") or "").strip() or None
        experiment = create_experiment(name, valid_name(project, "project") if project else None)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        flash(exc.message, "error")
        return redirect(url_for("web.index"), code=303)
    return redirect(url_for("web.experiment", name=experiment.name), code=303)


def _experiment_rows(experiment: Experiment):
    filters = ResultFilters.from_request()
    page = page_from_request()
    rows, total = page_of_results(db(), experiment, filters, page)
    return rows, total, filters, page


@web.get("/experiments/<name>")
def experiment(name: str):
    experiment = get_experiment(name)
    rows, total, filters, page = _experiment_rows(experiment)
    filter_args = {k: v for k, v in vars(filters).items() if v is not None}
    return render_template("experiment.html", experiment=experiment, rows=rows, total=total, filters=filters,
                           filter_args=filter_args,
                           page=page, pending=any(r["status"] in PENDING for r in rows),
                           markers=marker_choices(db(), experiment, filters),
                           may_upload=g.principal.has_role("uploader"))


@web.post("/experiments/<name>/resegment")
def resegment(name: str):
    require_role("uploader")
    experiment = get_experiment(name)
    try:
        version, filters = parse_resegment({k: request.form.get(k) or None for k in ("version", *RESEGMENT_FILTERS)})
        queued = resegment_experiment(experiment, version, filters)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        flash(exc.message, "error")
        return redirect(url_for("web.experiment", name=name), code=303)
    flash(f"Re-segmenting {queued['jobs']} image(s) with {queued['version']}"
          + (f"; {queued['skipped']} skipped (busy, or already segmented by it)." if queued["skipped"] else "."), "ok")
    return redirect(url_for("web.experiment", name=name), code=303)


@web.get("/experiments/<name>/rows")
def experiment_rows(name: str):
    """The table body alone, for the page's script to refresh while jobs are pending."""
    experiment = get_experiment(name)
    rows, _total, _filters, _page = _experiment_rows(experiment)
    return render_template("_image_rows.html", rows=rows, pending=any(r["status"] in PENDING for r in rows))


@web.post("/experiments/<name>/upload")
def upload(name: str):
    principal = require_role("uploader")
    experiment = get_experiment(name)
    try:
        check_upload_rate(principal, len(request.files.getlist("file")))
        rows, _accepted = accept_upload(experiment, request.files.getlist("file"), request.form,
                                        current_app.config["NUCLEUS_SETTINGS"], current_app.extensions["nucleus_store"])
    except ApiError as exc:
        if exc.status >= 500:
            raise
        flash(f"Nothing was uploaded. {exc.message}", "error")
        return redirect(url_for("web.experiment", name=name), code=303)
    new = sum(not r["duplicate"] for r in rows)
    duplicates = len(rows) - new
    flash(f"{new} image(s) queued" + (f", {duplicates} already in this experiment" if duplicates else "") + ".", "ok")
    return redirect(url_for("web.experiment", name=name), code=303)


@web.get("/experiments/<name>/results.<any(csv, parquet):fmt>")
def experiment_results_table(name: str, fmt: str):
    return results_export(db(), get_experiment(name), ResultFilters.from_request(), fmt)


@web.get("/experiments/<name>/nuclei.<any(csv, parquet):fmt>")
def experiment_nuclei_table(name: str, fmt: str):
    return nuclei_export(db(), get_experiment(name), ResultFilters.from_request(), fmt)


@web.get("/experiments/<name>/archive.zip")
def experiment_archive_zip(name: str):
    return experiment_archive(db(), get_experiment(name), ResultFilters.from_request())


@web.get("/experiments/<name>/plots/marker.png")
def experiment_marker_plot(name: str):
    experiment = get_experiment(name)
    filters = ResultFilters.from_request()
    marker, threshold = request.args.get("marker") or "", parse_threshold(request.args.get("threshold"))
    known = marker_choices(db(), experiment, filters)
    if marker not in known:
        raise ApiError(400, "invalid_query", f"marker must be a measured channel ({', '.join(known) or 'none yet'})")
    return _png(marker_png(marker_by_condition(db(), experiment, filters, marker, threshold), marker, threshold))


@web.get("/experiments/<name>/plots/<any(counts, areas, plate):plot>.png")
def experiment_plot(name: str, plot: str):
    experiment = get_experiment(name)
    filters = ResultFilters.from_request()
    if plot == "areas":
        title = "Nucleus area, " + ("matching images" if filters != ResultFilters() else "all images")
        return _png(area_histogram_png(area_histogram(db(), experiment=experiment, filters=filters), title))
    if plot == "counts":
        return _png(counts_by_condition_png(counts_by_condition(db(), experiment, filters)))
    return _png(plate_heatmap_png(mean_count_by_well(db(), experiment, filters)))


@web.get("/images/<image_id>")
def image(image_id: str):
    image = get_image(image_id)
    job, result = result_for(db(), image)
    nuclei = nucleus_rows(db(), result, limit=NUCLEI_SHOWN) if result else []
    return render_template("image.html", image=image, job=job, result=result, nuclei=nuclei,
                           nuclei_shown=NUCLEI_SHOWN, labels=labels_of_image(image),
                           may_label=g.principal.has_role("uploader"), editable=editable(image))


@web.get("/images/<image_id>/editor/image.png")
def editor_image(image_id: str):
    """The image as the label editor draws it under the labels."""
    image = get_image(image_id)
    data = display_png(image, current_app.config["NUCLEUS_SETTINGS"], current_app.extensions["nucleus_store"])
    return Response(data, mimetype="image/png", headers={"Cache-Control": "private, max-age=3600"})


@web.get("/images/<image_id>/editor/labels.u32")
def editor_labels(image_id: str):
    """The ids the editor starts from, row by row as little-endian uint32; X-Label-Source says whose."""
    image = get_image(image_id)
    labels, source = starting_labels(db(), image, current_app.config["NUCLEUS_SETTINGS"],
                                     current_app.extensions["nucleus_store"])
    headers = {"Cache-Control": "no-store", "X-Label-Source": source,
               "X-Label-Width": str(image.width), "X-Label-Height": str(image.height)}
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        return Response(raw_ids_gzip(labels), mimetype="application/octet-stream",
                        headers={**headers, "Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
    return Response(labels.astype("<u4").tobytes(), mimetype="application/octet-stream", headers=headers)


@web.post("/images/<image_id>/editor/labels")
def editor_save(image_id: str):
    """The editor's save: its label file (multipart `file`, CSRF token in X-CSRF-Token) goes through the
    labels API's acceptance; the answer is that API's JSON."""
    require_role("uploader")
    row, created = accept_label_and_maybe_train(get_image(image_id), request.files.get("file"))
    return jsonify({**row, "duplicate": not created}), 201 if created else 200


@web.post("/images/<image_id>/labels")
def upload_labels(image_id: str):
    require_role("uploader")
    image = get_image(image_id)
    try:
        row, created = accept_label_and_maybe_train(image, request.files.get("file"))
    except ApiError as exc:
        if exc.status >= 500:
            raise
        flash(f"The labels were not stored. {exc.message}", "error")
        return redirect(url_for("web.image", image_id=image_id), code=303)
    if created:
        flash(f"Labels stored: {row['count']} nuclei.", "ok")
    else:
        flash("These labels were already stored for this image.", "ok")
    return redirect(url_for("web.image", image_id=image_id), code=303)


@web.get("/labels/<label_id>/labels.png")
def label_download(label_id: str):
    return label_file(label_id)


RUNS_SHOWN = 20


@web.get("/models")
def models():
    page = page_from_request()
    project = requested_project(request.args.get("project") or None)
    rows, total = page_of_models(page, project)
    runs, _runs_total = page_of_runs(Page(page=1, per_page=RUNS_SHOWN))
    return render_template("models.html", models=rows, total=total, page=page, project=project.name,
                           lines=model_lines(), runs=[run_json(run) for run in runs],
                           training=any(run.status in OPEN for run in runs),
                           may_admin=g.principal.has_role("admin"))


@web.post("/models/<version>/activate")
def activate(version: str):
    require_role("admin")
    try:
        project = requested_project(request.form.get("project") or None)
        activate_version(version, project)
    except ApiError as exc:
        if exc.status >= 500:
            raise
        flash(exc.message, "error")
        return redirect(url_for("web.models"), code=303)
    flash(f"{version} is now the active model of project {project.name}; its new jobs use it.", "ok")
    return redirect(url_for("web.models", project=project.name), code=303)


@web.post("/training-runs")
def start_training():
    require_role("admin")
    try:
        epochs = (request.form.get("epochs") or "1").strip()
        if not epochs.isdigit():
            raise ApiError(400, "invalid_field", f"epochs must be a whole number, not {epochs!r}")
        epochs, force = parse_run_request({"epochs": int(epochs),
                                           "force_promote": request.form.get("force_promote") in ("on", "true", "1")})
        project_id = project_for_run(request.form.get("project") or None)
    except ApiError as exc:
        flash(exc.message, "error")
        return redirect(url_for("web.models"), code=303)
    run_id = create_run(current_app.config["NUCLEUS_SETTINGS"], epochs, force, project_id)
    flash(f"Training run {run_id} queued.", "ok")
    return redirect(url_for("web.models"), code=303)


@web.get("/images/<image_id>/area.png")
def image_area_plot(image_id: str):
    image = get_image(image_id)
    _job, result = result_for(db(), image)
    return _png(area_histogram_png(area_histogram(db(), result=result) if result else Histogram([], [])))


@web.get("/images/<image_id>/<any(" + ", ".join(f'"{a}"' for a in ARTIFACTS) + "):artifact>")
def image_artifact(image_id: str, artifact: str):
    return artifact_response(db(), get_image(image_id), artifact)
