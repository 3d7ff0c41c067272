from shared.db.models import (  # noqa: F401
    Base, Experiment, Image, Job, JobStatus, Label, ModelVersion, Nucleus, Project, Result, Token,
    TrainingRun, TrainingStatus,
)
from shared.db.session import get_engine, session_scope  # noqa: F401
