"""The experiment page's list of marker channels: from the images' channel_names (what the page uses) against a
scan of the results' measure_columns (exports.measure_columns), on a fresh PostgreSQL database built by scale.py.

    .venv/bin/python bench/marker_choices.py [IMAGES]     # default 20,000 images (10 nuclei each)
"""
from __future__ import annotations

import statistics
import sys
import time

from sqlalchemy.orm import Session

from scale import MACHINE_PG, build  # bench/scale.py, beside this script
from services.api.exports import measure_columns
from services.api.queries import ResultFilters
from services.api.web.marker_plots import MARKER_PREFIX, marker_choices
from shared.infra.db.tables import Experiment
from shared.infra.db.session import get_engine
from testkit.servers import create_database, drop_database


def from_results(session, experiment):
    return [n[len(MARKER_PREFIX):] for n in measure_columns(session, experiment, ResultFilters())
            if n.startswith(MARKER_PREFIX)]


def main() -> None:
    images = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    url = create_database(MACHINE_PG, prefix="nucleus_markers")
    try:
        build(url, images, images * 10)
        with Session(get_engine(url)) as session:
            experiment = session.query(Experiment).first()
            for name, choices in (("results' measure_columns", from_results),
                                  ("images' channel_names", lambda s, e: marker_choices(s, e, ResultFilters()))):
                choices(session, experiment)
                times = []
                for _ in range(5):
                    started = time.perf_counter()
                    found = choices(session, experiment)
                    times.append(time.perf_counter() - started)
                print(f"{images} images, {name:26s} {found}  median {statistics.median(times) * 1000:.1f} ms")
    finally:
        get_engine.cache_clear()
        drop_database(url)


if __name__ == "__main__":
    main()
