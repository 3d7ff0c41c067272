"""gunicorn target: `gunicorn services.api.wsgi:app`."""
from shared.infra.logs import configure_logging

from services.api import create_app

configure_logging("api")
app = create_app()
