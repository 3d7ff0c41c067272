"""/metrics: the pipeline's state in Prometheus text format, computed from the job table at scrape time.

Open like /healthz (no token): it exposes only aggregate counts, durations and the model version,
never image names, experiments or tokens, and a scraper should not need a credential that can
read data. Put it behind the reverse proxy's allow-list if that is too much.

Everything is read fresh per scrape (the SQL job table is the truth, and the API may run several
gunicorn processes), so nothing here keeps state between requests.
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import case, desc, func, select
from sqlalchemy.exc import SQLAlchemyError

from services.api.database import db
from shared.infra.db.tables import Job, JobStatus, Result
from shared.infra.registry import active_version as registry_active_version
from shared.infra.queue import SEGMENT_QUEUE, TRAIN_QUEUE, queue_depth

log = logging.getLogger(__name__)

prometheus = Blueprint("prometheus", __name__)

# seconds; a 256x256 image takes a fraction of a second on a CPU core, a 4k x 4k one minutes
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
QUEUES = (SEGMENT_QUEUE, TRAIN_QUEUE)


def _histogram(session, column, name: str, documentation: str) -> HistogramMetricFamily:
    """A cumulative histogram of one results column, bucketed in SQL (one row, whatever the table size)."""
    bucket_sums = [func.coalesce(func.sum(case((column <= bound, 1), else_=0)), 0) for bound in DURATION_BUCKETS]
    row = session.execute(select(func.count(column), func.coalesce(func.sum(column), 0.0), *bucket_sums)).one()
    count, total, cumulative = int(row[0]), float(row[1]), [int(v) for v in row[2:]]
    buckets = [(str(bound), n) for bound, n in zip(DURATION_BUCKETS, cumulative)] + [("+Inf", count)]
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], buckets, total)
    return family


class PipelineCollector:
    def collect(self):
        depth = GaugeMetricFamily("nucleus_queue_depth", "Messages waiting in a broker queue", labels=["queue"])
        for queue in QUEUES:
            waiting = queue_depth(queue)
            if waiting is not None:  # unknown while the broker is down: absent, not a false zero
                depth.add_metric([queue], waiting)
        yield depth

        database_up = GaugeMetricFamily("nucleus_database_up", "1 when the job table could be read for this scrape")
        try:
            families = list(self._from_database(db()))
            database_up.add_metric([], 1)
        except SQLAlchemyError as exc:
            log.warning("metrics: database unavailable: %s", exc)
            families = []
            database_up.add_metric([], 0)
        yield database_up
        yield from families

    @staticmethod
    def _from_database(session):
        jobs = GaugeMetricFamily("nucleus_jobs", "Segmentation jobs by state", labels=["state"])
        counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        for state in JobStatus:
            jobs.add_metric([state.value], counts.get(state, 0))
        yield jobs
        yield _histogram(session, Result.seconds_total, "nucleus_task_seconds",
                         "Worker time per finished job: fetch, decode, model, measurements, outputs")
        yield _histogram(session, Result.seconds_model, "nucleus_model_seconds",
                         "Segmentation (model) time per finished job")

        model = GaugeMetricFamily("nucleus_model_info", "Model versions: the active one (registry) and the "
                                  "one the latest result used", labels=["version", "role"])
        active = registry_active_version(session)  # the `default` project's
        model.add_metric([active.version if active else "shipped", "active"], 1)
        latest = session.scalar(select(Result.model_version).order_by(desc(Result.created)).limit(1))
        if latest:
            model.add_metric([latest, "latest_result"], 1)
        yield model


@prometheus.get("/metrics")
def prometheus_metrics():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector())
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
