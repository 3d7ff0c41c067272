"""One settings object for every service, read from NUCLEUS_* environment variables.

The embedded default (a laptop, `nucleus up`) and production (docker-compose) differ only here:
unset, everything lives under `data_dir` (SQLite, a local-folder object store, a file-system
broker); production sets NUCLEUS_DATABASE_URL, NUCLEUS_BROKER_URL and NUCLEUS_S3_ENDPOINT.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.domain.model.options import DEFAULT_TILE, DEFAULT_VIEWS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NUCLEUS_", extra="ignore")

    data_dir: Path = Field(default=Path("./nucleus-data"), description="Where the embedded default keeps everything")

    database_url: str | None = None  # default: sqlite:///<data_dir>/nucleus.db
    broker_url: str | None = None  # default: a file-system broker under <data_dir>/broker

    # Object storage: S3/MinIO when an endpoint is set, else a local folder under data_dir.
    s3_endpoint: str | None = None  # host:port, as the minio SDK wants it
    s3_access_key: str = "minioadmin"
    s3_secret_key: str = "minioadmin"
    s3_bucket: str = "nucleus"
    s3_secure: bool = False
    s3_region: str = "us-east-1"

    # Intake limits
    max_upload_bytes: int = 1 << 30
    max_pixels: int = 250_000_000
    # A label upload (label image, mask zip, RoiSet, GeoJSON) costs the API at most twice its file plus
    # shared.domain.labels.MEMORY_BYTES_PER_PIXEL per pixel of the image it labels (shared.domain.labels.memory_bound).
    max_label_bytes: int = 64 << 20
    upload_rate_per_minute: int = 600  # image files per token (or signed-in person) per minute; 0: no limit

    # Delivery: a job sitting in queued/running past its lease is re-enqueued by the sweeper.
    job_lease_seconds: int = 300
    job_max_seconds: int = 3600  # a worker renews its job's lease this long at most; longer counts as a hang
    sweep_interval_seconds: float = 10.0
    task_max_retries: int = 5

    # Inference
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # one of shared.domain.model.options.PRECISIONS; auto: bfloat16 where the CPU/GPU has the instructions
    runtime: str = "auto"  # one of shared.domain.model.options.RUNTIMES
    torch_threads: int = 0  # 0: cores / worker processes
    worker_processes: int = 1
    tile_size: int = DEFAULT_TILE
    # Larger images are segmented and measured region by region (shared.domain.segmentation.tiled), in memory that
    # grows with the label image alone instead of with the network's maps and working arrays.
    whole_image_max_pixels: int = 2048 * 2048
    # A worker segments an image within this memory (shared.domain.segmentation.tiled.worker_memory_needed); an upload that would
    # need more is refused (413). The default takes every image up to max_pixels, grey or RGB 8-bit.
    worker_memory_bytes: int = 3 << 30
    test_time_views: int = DEFAULT_VIEWS  # one of shared.domain.model.options.VIEWS
    worker_metrics_port: int = 0  # 0: off; worker segment-<i> serves Prometheus metrics on this port + i
    model_cache_size: int = Field(default=3, ge=1)  # model versions each worker process keeps loaded
    weights_path: Path | None = None  # default: the shipped weights inside the package

    # Training service: fine-tunes the active model on base data + user labels.
    # Fine-tuning defaults chosen with bench/adaptation.py (its section in bench/README.md gives the measurements).
    training_steps_per_epoch: int = 50
    training_crop: int = 224
    training_batch: int = 8
    training_lr: float = 5e-4
    # labelled base set; default: default_dsb_dir() ($NUCLEUS_DATA_ROOT, else ../shared/data)/dsb2018-stage1-train
    training_base_dir: Path | None = None
    training_base_limit: int = 0  # 0: every base image
    training_validation_limit: int = 0  # 0: the whole fixed validation split
    training_user_share: float = 0.5  # share of training samples drawn from user labels
    training_freeze: str = "none"  # one of shared.domain.training.loop.FREEZE_CHOICES: "none" | "encoder"
    # Without training_base_dir or a local DSB folder, the base set `nucleus dataset import` stored in the object
    # store under this name, copied once into training_cache_dir (default: <data_dir>/cache/datasets).
    training_base_set: str = "base"
    training_cache_dir: Path | None = None
    promotion_tolerance: float = 0.02  # allowed drop in DSB score on the project's held-out images
    # allowed drop in DSB score on the base validation split: a guard against collapse, not the objective
    promotion_base_tolerance: float = 0.10
    auto_train_after_labels: int = 0  # 0: never start training automatically

    secret_key: str | None = None  # Flask sessions; generated and kept in data_dir when unset
    session_lifetime_hours: float = 12.0  # a web sign-in lasts this long at most; signing out ends it at once
    secure_cookies: bool = False  # deployed behind TLS: the session cookie is marked Secure and HSTS is sent
    trusted_proxies: int = 0  # reverse proxies in front of the API whose X-Forwarded-For/-Proto/-Host are believed

    # Throttling and rate limits, in Flask-Limiter's notation ("10/minute", "100/hour"); empty: off.
    auth_failure_limit: str = "10/minute"  # failed sign-ins and unknown bearer tokens, per client address and per token prefix
    label_upload_rate: str = "60/minute"  # per token, label uploads (API and page)
    export_rate: str = "30/minute"  # per token, CSV/Parquet exports of results and nuclei
    plot_rate: str = "240/minute"  # per token, plot images
    training_run_rate: str = "10/hour"  # per token, training runs started
    resegment_rate: str = "10/hour"  # per token, experiments sent to be segmented again
    log_level: str = "INFO"
    log_json: bool = True
    # The network's exported ONNX graphs, kept between processes (start-up); default: <user cache>/nucleus/onnx
    graph_cache_dir: Path | None = None

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'nucleus.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def objects_folder(self) -> Path:
        return (self.data_dir / "objects").resolve()

    @property
    def graph_cache_folder(self) -> Path:
        if self.graph_cache_dir is not None:
            return self.graph_cache_dir
        return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nucleus" / "onnx"

    @property
    def embedded(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reload_settings() -> Settings:
    get_settings.cache_clear()
    return get_settings()
