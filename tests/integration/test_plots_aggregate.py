"""The experiment page's plots count in the database (tallies, averages and bins) rather than reading every
nucleus: their figures against an experiment whose counts and areas are known."""
from __future__ import annotations

from sqlalchemy import select

from services.api.queries import ResultFilters, area_histogram, counts_by_condition, mean_count_by_well, result_for
from shared.infra.db.tables import Experiment, Image
from testkit.api import nuclei_image


def test_plot_figures_match_the_experiment(harness, admin, experiment):
    images = []
    for seed, condition, well, count in ((1, "x", "A01", 3), (2, "x", "A01", 5), (3, "y", "B02", 2), (4, "y", None, 0)):
        fields = {"condition": condition, **({"well": well} if well else {})}
        response = admin.upload(experiment, [(f"p{seed}.png", nuclei_image(seed))], **fields)
        assert response.status_code == 202
        [row] = response.json["images"]
        harness.finish(row["job_id"], count=count)  # nuclei of areas 4, 6, 8, ...
        images.append(row["id"])
    admin.upload(experiment, [("queued.png", nuclei_image(9))], condition="z", well="C03")  # no result yet

    with harness.session() as session:
        exp = session.scalars(select(Experiment).where(Experiment.name == experiment)).one()
        counts = counts_by_condition(session, exp, ResultFilters())
        assert {name: sorted(values) for name, values in counts.items()} == {"x": [3, 5], "y": [0, 2]}
        assert mean_count_by_well(session, exp, ResultFilters()) == {"A01": 4.0, "B02": 2.0}
        assert mean_count_by_well(session, exp, ResultFilters(condition="y")) == {"B02": 2.0}

        histogram = area_histogram(session, experiment=exp)
        assert histogram.total == 10 and histogram.edges[0] == 4.0 and histogram.edges[-1] == 12.0
        assert len(histogram.edges) == len(histogram.counts) + 1 == 11
        assert histogram.counts[0] == 3 and histogram.counts[-1] == 1  # area 4 thrice; 12 (on the last edge) once
        assert area_histogram(session, experiment=exp, filters=ResultFilters(condition="y")).total == 2
        assert area_histogram(session, experiment=exp, filters=ResultFilters(condition="z")).total == 0

        _job, result = result_for(session, session.get(Image, images[1]))
        one = area_histogram(session, result=result)
        assert one.total == 5 and one.edges[0] == 4.0 and one.edges[-1] == 12.0
