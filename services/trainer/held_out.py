"""Each project's held-out share: labelled images kept for judging its training runs, never trained on.

An image's place is decided once, the first time a run sees its label, in the order the images were
first labelled, and recorded in `held_out_images`; later labels never move it. The share: none
while a project has one or two labelled images, one at three and four, two from five on, then a fifth.
"""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.infra.db.tables import Experiment, HeldOutImage, Image, Label, utcnow

SHARE = 0.2
MINIMUM_FROM_FIVE = 2


def target(labelled: int) -> int:
    """How many of a project's `labelled` images are held out."""
    if labelled < 3:
        return 0
    if labelled < 5:
        return 1
    return max(MINIMUM_FROM_FIVE, round(labelled * SHARE))


def assign(session: Session, project_id: int) -> dict[str, bool]:
    """{image id: held out} for every labelled image of the project, deciding (and recording) the place of
    images seen for the first time."""
    first_labelled = (select(Label.image_id, func.min(Label.created).label("first"))
                      .join(Image, Image.id == Label.image_id)
                      .join(Experiment, Experiment.id == Image.experiment_id)
                      .where(Experiment.project_id == project_id)
                      .group_by(Label.image_id).subquery())
    ordered = session.execute(select(first_labelled.c.image_id)
                              .order_by(first_labelled.c.first, first_labelled.c.image_id)).scalars().all()
    places = dict(session.execute(select(HeldOutImage.image_id, HeldOutImage.held_out)
                                  .where(HeldOutImage.project_id == project_id)).all())
    held = sum(places.values())
    for image_id in ordered:
        if image_id in places:
            continue
        place = held < target(len(places) + 1)
        session.add(HeldOutImage(image_id=image_id, project_id=project_id, held_out=place, assigned=utcnow()))
        places[image_id] = place
        held += place
    session.flush()
    return {image_id: places[image_id] for image_id in ordered}
