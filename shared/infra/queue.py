"""The task queue: one Celery configuration for every producer and consumer.

The SQL job table is the truth; the broker only delivers (no result backend). Delivery is
at-least-once: a message is acknowledged after its task ran (`acks_late`), a worker takes one
message at a time, and whatever the broker loses the sweeper re-enqueues from the job table.

Embedded default: kombu's file-system transport under `settings.broker_folder` (no server), with messages
written whole (shared.infra.filesystem_broker).
Production: Redis (`NUCLEUS_BROKER_URL=redis://...`).
"""
from __future__ import annotations

import logging
from functools import lru_cache

from celery import Celery

from shared.infra.settings import Settings, get_settings
from shared.infra.private import private_dir
from shared.infra.filesystem_broker import TRANSPORT as FILESYSTEM_TRANSPORT

log = logging.getLogger(__name__)

SEGMENT_TASK = "nucleus.segment"
TRAIN_TASK = "nucleus.train"
SEGMENT_QUEUE = "segment"
TRAIN_QUEUE = "train"


def _filesystem_transport_options(settings: Settings) -> dict:
    root = settings.broker_folder
    messages, control = root / "messages", root / "control"
    for folder in (messages, control):
        private_dir(folder)
    return {
        # one folder for both directions: every process on this machine reads and writes the same queue files
        "data_folder_in": str(messages),
        "data_folder_out": str(messages),
        "control_folder": str(control),
        "store_processed": False,
        # an idle worker lists one small folder 50 times a second; a job waits 10 ms for it on average, not 50
        "polling_interval": 0.02,
    }


def celery_config(settings: Settings) -> dict:
    config = {
        "broker_url": settings.resolved_broker_url,
        "broker_connection_retry_on_startup": True,
        "task_ignore_result": True,
        "result_backend": None,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": SEGMENT_QUEUE,
        "task_routes": {SEGMENT_TASK: {"queue": SEGMENT_QUEUE}, TRAIN_TASK: {"queue": TRAIN_QUEUE}},
        "task_serializer": "json",
        "accept_content": ["json"],
        # a publish that cannot reach the broker fails fast, so the API can answer 503
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                                      "interval_max": 1.0},
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
    }
    if settings.embedded:
        config["broker_transport"] = FILESYSTEM_TRANSPORT
        config["broker_transport_options"] = _filesystem_transport_options(settings)
        # no fan-out needed on one machine; the file-system transport would poll for it
        config["worker_enable_remote_control"] = False
        config["worker_send_task_events"] = False
        config["task_send_sent_event"] = False
    else:
        config["broker_transport_options"] = {
            # Redis redelivers an unacknowledged message after this; the sweeper usually acts first
            "visibility_timeout": max(3600, 2 * settings.job_lease_seconds),
            "socket_connect_timeout": 3,
            "socket_timeout": 10,
        }
        config["broker_connection_timeout"] = 3
    return config


def make_celery(main: str, settings: Settings | None = None) -> Celery:
    app = Celery(main, set_as_current=False)
    app.conf.update(celery_config(settings or get_settings()))
    return app


@lru_cache(maxsize=1)
def producer_app() -> Celery:
    """The app that producers (API, sweeper, CLI) send with; built once per process from settings."""
    return make_celery("nucleus-producer")


def enqueue_segment(job_id: str) -> None:
    """Send one delivery of a segmentation job. Raises kombu/redis errors when the broker is unreachable."""
    producer_app().send_task(SEGMENT_TASK, args=[job_id], queue=SEGMENT_QUEUE)


def enqueue_training(run_id: str) -> None:
    producer_app().send_task(TRAIN_TASK, args=[run_id], queue=TRAIN_QUEUE)


def queue_depth(queue: str) -> int | None:
    """Messages waiting in `queue`, or None when the broker cannot tell right now."""
    try:
        with producer_app().connection_for_read() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
            # kombu's virtual transports (Redis, file system) can count a queue that does not exist yet
            return int(connection.default_channel._size(queue))
    except Exception as exc:  # noqa: BLE001 - a gauge must never break its caller
        log.warning("queue depth unavailable", extra={"queue": queue, "error": str(exc)})
        return None

