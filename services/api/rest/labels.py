"""Label routes: upload a label image for an image, list and download labels (services.api.labelling does the work)."""
from __future__ import annotations

from flask import jsonify, request
from sqlalchemy import select

from services.api.access import get_experiment, get_image, require_role
from services.api.database import db
from services.api.labelling import accept_label_and_maybe_train, label_file, label_json, labels_of_image
from services.api.queries import count_rows, page_from_request
from services.api.rest import api
from shared.infra.db.tables import Image, Label


@api.post("/images/<image_id>/labels")
def post_labels(image_id: str):
    require_role("uploader")
    row, created = accept_label_and_maybe_train(get_image(image_id), request.files.get("file"))
    return jsonify({**row, "duplicate": not created}), 201 if created else 200


@api.get("/images/<image_id>/labels")
def image_labels(image_id: str):
    require_role("viewer")
    return jsonify({"labels": labels_of_image(get_image(image_id))})


@api.get("/experiments/<name>/labels")
def experiment_labels(name: str):
    require_role("viewer")
    experiment = get_experiment(name)
    page = page_from_request()
    session = db()
    query = (select(Label, Image).join(Image, Image.id == Label.image_id)
             .where(Image.experiment_id == experiment.id))
    total = count_rows(session, query)
    rows = session.execute(query.order_by(Label.created, Label.id).offset(page.offset).limit(page.per_page)).all()
    return jsonify(page.body("labels", [label_json(label, image) for label, image in rows], total))


@api.get("/labels/<label_id>/labels.png")
def label_download(label_id: str):
    require_role("viewer")
    return label_file(label_id)
