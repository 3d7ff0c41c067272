from shared.infra.db.tables import (  # noqa: F401
    Base, Experiment, Image, Job, JobStatus, Label, ModelVersion, Nucleus, Project, Result, Token,
    TrainingRun, TrainingStatus,
)
from shared.infra.db.session import get_engine, session_scope, write_scope  # noqa: F401
