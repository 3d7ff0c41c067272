"""The history page's marker plot (issue 28.2): a channel's mean intensity per condition and the fraction of
nuclei above a threshold, from streamed nuclei, served from the same origin without inline scripts."""
from __future__ import annotations

import re

import numpy as np

from services.api.queries import ResultFilters
from services.api.web import marker_plots
from shared.infra import jobs
from shared.infra.db.tables import Experiment, Image
from testkit.api import nuclei_image
from testkit.api import sign_in

EDU = {"dmso": [[100.0, 200.0, 900.0], [50.0]], "drug": [[1000.0, 1500.0, 300.0]]}


def finish_with_markers(harness, job_id: str, edu: list[float]) -> None:
    """A result whose nuclei carry per-channel measures, as the worker records them for an image whose file
    names its channels Hoechst and EdU (intake records the names)."""
    with harness.session() as session:
        session.get(Image, harness.image_of(job_id)).channel_names = ["Hoechst", "EdU"]
    columns = ["mean_intensity_hoechst", "mean_intensity_edu", "area_um2"]
    nuclei = [dict(label=i + 1, area=10.0, perimeter=8.0, centroid_x=3.0, centroid_y=3.0, equivalent_diameter=2.5,
                   eccentricity=0.5, solidity=1.0, mean_intensity=100.0, integrated_intensity=1000.0,
                   measures={"mean_intensity_hoechst": 2000.0, "mean_intensity_edu": value, "area_um2": 1.0})
              for i, value in enumerate(edu)]
    result = dict(image_id=harness.image_of(job_id), model_version="nucleus-test-00000000", count=len(nuclei),
                  area_mean=10.0, area_median=10.0, area_min=10.0, area_max=10.0, labels_key="l", overlay_key="o",
                  nuclei_csv_key="n", seconds_model=0.1, seconds_total=0.2, measure_columns=columns)
    assert jobs.complete(job_id, result, nuclei, url=harness.url)


def seed(harness, admin, experiment: str) -> None:
    seed_no = 500
    for condition, images in EDU.items():
        for values in images:
            seed_no += 1
            response = admin.upload(experiment, [(f"{seed_no}.png", nuclei_image(seed_no))], condition=condition)
            finish_with_markers(harness, response.json["images"][0]["job_id"], values)


def test_marker_per_condition_counts_every_nucleus_and_samples_a_bounded_number(harness, admin, experiment,
                                                                                  monkeypatch):
    seed(harness, admin, experiment)
    with harness.session() as session:
        found = session.query(Experiment).filter_by(name=experiment).one()
        assert marker_plots.marker_choices(session, found, ResultFilters()) == ["hoechst", "edu"]
        groups = marker_plots.marker_by_condition(session, found, ResultFilters(), "edu", threshold=350.0)
        assert {name: (g.nuclei, g.above) for name, g in groups.items()} == {"dmso": (4, 1), "drug": (3, 2)}
        assert sorted(groups["drug"].sample) == [300.0, 1000.0, 1500.0]
        monkeypatch.setattr(marker_plots, "SAMPLE_PER_CONDITION", 2)
        capped = marker_plots.marker_by_condition(session, found, ResultFilters(condition="dmso"), "edu", None)
        assert capped["dmso"].nuclei == 4 and len(capped["dmso"].sample) == 2
        assert set(capped["dmso"].sample) <= {100.0, 200.0, 900.0, 50.0}


def test_the_history_page_plots_a_marker_with_a_threshold(harness, admin, experiment):
    seed(harness, admin, experiment)
    client, _csrf = sign_in(harness)
    page = client.get(f"/experiments/{experiment}?marker=edu&threshold=350").get_data(as_text=True)
    section = page[page.index('id="markers"'):page.index("</section>", page.index('id="markers"'))]
    assert '<option value="edu" selected' in section and 'value="hoechst"' in section
    src = re.search(r'<img alt="edu per condition" src="([^"]+)"', section).group(1).replace("&amp;", "&")
    assert src.startswith("/experiments/") and "marker=edu" in src and "threshold=350" in src
    assert "<script" not in section and not re.search(r"\son[a-z]+=", section)
    plot = client.get(src)
    assert plot.status_code == 200 and plot.mimetype == "image/png" and plot.data.startswith(b"\x89PNG")
    one_panel = client.get(f"/experiments/{experiment}/plots/marker.png?marker=hoechst")
    assert one_panel.status_code == 200 and len(one_panel.data) != len(plot.data)
    for query, word in (("marker=dapi", "hoechst, edu"), ("marker=edu&threshold=lots", "threshold")):
        refused = client.get(f"/experiments/{experiment}/plots/marker.png?{query}")
        assert refused.status_code == 400 and word in refused.get_data(as_text=True)


def test_no_marker_section_without_per_channel_results(harness, admin, experiment):
    client, _csrf = sign_in(harness)
    assert 'id="markers"' not in client.get(f"/experiments/{experiment}").get_data(as_text=True)


def test_exports_in_cellprofiler_names(harness, admin, experiment):
    seed(harness, admin, experiment)
    table = admin.get(f"/api/v1/experiments/{experiment}/nuclei.csv?columns=cellprofiler").get_data(as_text=True)
    header = table.splitlines()[0].split(",")
    assert {"ImageNumber", "ObjectNumber", "AreaShape_Area", "Location_Center_X", "Intensity_MeanIntensity_edu",
            "Metadata_Condition", "AreaShape_Area_um2"} <= set(header)
    assert len(table.splitlines()) == 1 + 7
    native = admin.get(f"/api/v1/experiments/{experiment}/nuclei.csv").get_data(as_text=True).splitlines()[0]
    assert "mean_intensity_edu" in native.split(",") and "label" in native.split(",")
    refused = admin.get(f"/api/v1/experiments/{experiment}/nuclei.csv?columns=excel")
    assert refused.status_code == 400 and refused.json["error"]["code"] == "invalid_query"
    assert np.isfinite(float(table.splitlines()[1].split(",")[header.index("Intensity_MeanIntensity_edu")]))
