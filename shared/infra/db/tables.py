"""The SQL schema. The job table is the truth about every image's fate; the broker only delivers.

Changes go through an Alembic migration in migrations/versions (nothing calls create_all).
"""
from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone

from sqlalchemy import (
    JSON, Boolean, DateTime, Enum, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id() -> str:
    return uuid.uuid4().hex


class Base(DeclarativeBase):
    pass


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


TrainingStatus = JobStatus


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Experiment(Base):
    __tablename__ = "experiments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    project: Mapped[Project] = relationship()


class Image(Base):
    """One uploaded image in one experiment. The same bytes in the same experiment are one row."""
    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("experiment_id", "sha256", name="uq_image_experiment_sha256"),
        # the history's order within an experiment, alone and after its condition and well filters
        Index("ix_images_experiment_created", "experiment_id", "created", "id"),
        Index("ix_images_experiment_condition", "experiment_id", "condition", "created", "id"),
        Index("ix_images_experiment_well", "experiment_id", "well", "created", "id"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    object_key: Mapped[str] = mapped_column(String(300))  # uploads/<sha256>: same bytes stored once
    filename: Mapped[str] = mapped_column(String(500))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    condition: Mapped[str | None] = mapped_column(String(200), index=True)
    well: Mapped[str | None] = mapped_column(String(20), index=True)
    plate: Mapped[str | None] = mapped_column(String(200))
    site: Mapped[str | None] = mapped_column(String(20))
    channel: Mapped[int | None] = mapped_column(Integer)
    pixel_size_um: Mapped[float | None] = mapped_column(Float)
    channel_names: Mapped[list] = mapped_column(JSON, default=list)  # every channel of the file, in order
    extra: Mapped[dict] = mapped_column(JSON, default=dict)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    experiment: Mapped[Experiment] = relationship()


class Job(Base):
    """Segmenting one image with one model version: the upload's job, then one per re-segmentation.
    Redeliveries and retries reuse it."""
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_image_created", "image_id", "created", "id"),  # an image's jobs, newest last
        # the jobs with one status and their images, from the index alone (the history's status filter)
        Index("ix_jobs_status_image", "status", "image_id", postgresql_include=["created", "id"]),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"))
    # the version asked for (a re-segmentation); None: the project's active version when the job runs
    model_version: Mapped[str | None] = mapped_column(String(100))
    status: Mapped[JobStatus] = mapped_column(Enum(JobStatus, native_enum=False, length=16),
                                              default=JobStatus.queued)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    enqueued: Mapped[int] = mapped_column(Integer, default=0)  # messages sent for it (sweeper included)
    interruptions: Mapped[int] = mapped_column(Integer, default=0)  # times its worker died or hung mid-task
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    worker: Mapped[str | None] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    image: Mapped[Image] = relationship()
    result: Mapped["Result"] = relationship(back_populates="job", uselist=False)


class Result(Base):
    """What a job produced. Keyed by its job: a second delivery cannot write a second result. An image
    has one per job (one per model version it was segmented with); the newest is its result."""
    __tablename__ = "results"
    # an image's results, carrying their column lists: an experiment's measure columns come from the index alone
    __table_args__ = (Index("ix_results_image_measures", "image_id", postgresql_include=["measure_columns"]),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), unique=True)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"))
    model_version: Mapped[str] = mapped_column(String(100), index=True)
    count: Mapped[int] = mapped_column(Integer)
    area_mean: Mapped[float | None] = mapped_column(Float)
    area_median: Mapped[float | None] = mapped_column(Float)
    area_min: Mapped[float | None] = mapped_column(Float)
    area_max: Mapped[float | None] = mapped_column(Float)
    labels_key: Mapped[str] = mapped_column(String(300))
    overlay_key: Mapped[str] = mapped_column(String(300))
    nuclei_csv_key: Mapped[str] = mapped_column(String(300))
    seconds_model: Mapped[float | None] = mapped_column(Float)
    seconds_total: Mapped[float | None] = mapped_column(Float)
    # names of the extra per-nucleus columns its nuclei carry in `Nucleus.measures`, in table order
    # (per-channel intensities, physical units): an export learns its columns from these without reading nuclei
    measure_columns: Mapped[list] = mapped_column(JSON, default=list)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    job: Mapped[Job] = relationship(back_populates="result")
    nuclei: Mapped[list["Nucleus"]] = relationship(back_populates="result", cascade="all, delete-orphan")


class Nucleus(Base):
    __tablename__ = "nuclei"
    __table_args__ = (Index("ix_nuclei_result_label", "result_id", "label"),)  # a result's nuclei in table order
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"))
    label: Mapped[int] = mapped_column(Integer)
    area: Mapped[float] = mapped_column(Float)
    perimeter: Mapped[float] = mapped_column(Float)
    centroid_x: Mapped[float] = mapped_column(Float)
    centroid_y: Mapped[float] = mapped_column(Float)
    equivalent_diameter: Mapped[float] = mapped_column(Float)
    eccentricity: Mapped[float] = mapped_column(Float)
    solidity: Mapped[float] = mapped_column(Float)
    mean_intensity: Mapped[float] = mapped_column(Float)
    integrated_intensity: Mapped[float] = mapped_column(Float)
    # extra columns by name, e.g. {"mean_intensity_hoechst": 812.5, "area_um2": 41.2}: see Result.measure_columns
    measures: Mapped[dict] = mapped_column(JSON, default=dict)
    result: Mapped[Result] = relationship(back_populates="nuclei")


class Token(Base):
    """An API token. Only its SHA-256 is stored; the token itself is shown once."""
    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))  # viewer | uploader | admin
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"))  # None: every project
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    project: Mapped[Project | None] = relationship()


class WebSession(Base):
    """A signed-in browser. The cookie carries the session's id; only its SHA-256 is stored, and
    signing out (or the token's revocation, or the lifetime running out) ends it on the server."""
    __tablename__ = "web_sessions"
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("tokens.id"), index=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Label(Base):
    """A scientist's label image for an uploaded image: training data for the next model."""
    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("image_id", "sha256", name="uq_label_image_sha256"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), index=True)
    object_key: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelVersion(Base):
    """A published set of weights. Which one each project uses is in ProjectModel (shared.infra.registry)."""
    __tablename__ = "model_versions"
    version: Mapped[str] = mapped_column(String(100), primary_key=True)
    parent: Mapped[str | None] = mapped_column(String(100))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"), index=True)  # the line it was trained in
    object_key: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    training_summary: Mapped[dict] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProjectModel(Base):
    """A project's active model version. A project without a row uses the `default` project's."""
    __tablename__ = "project_models"
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    version: Mapped[str] = mapped_column(ForeignKey("model_versions.version"))
    activated: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class HeldOutImage(Base):
    """A labelled image's fixed place in its project's split: held out (evaluation only, never trained on)
    or not. Assigned once, when a training run first sees its label."""
    __tablename__ = "held_out_images"
    image_id: Mapped[str] = mapped_column(ForeignKey("images.id"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    held_out: Mapped[bool] = mapped_column(Boolean)
    assigned: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingRun(Base):
    __tablename__ = "training_runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    status: Mapped[JobStatus] = mapped_column(Enum(JobStatus, native_enum=False, length=16), default=JobStatus.queued)
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id"))  # None: the `default` project
    epochs: Mapped[int] = mapped_column(Integer, default=1)
    force_promote: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    version: Mapped[str | None] = mapped_column(String(100))
    promoted: Mapped[bool | None] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(Text)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # a queued run's message is re-sent after
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
