# One image for every service (api, worker, trainer, sweeper, migrate); docker-compose.yml picks the command.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 1000 nucleus
WORKDIR /app

# torch==2.13.0 is pinned in pyproject.toml; on Linux x86_64 PyPI serves its CUDA build, which also runs on the CPU.
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY nucleus ./nucleus
COPY migrations ./migrations
# testkit: the test servers and helpers that tests and bench/ import; installed with the rest, never imported by a service
COPY testkit ./testkit
RUN pip install . && nucleus --help >/dev/null

USER nucleus
ENV NUCLEUS_DATA_DIR=/home/nucleus/data
EXPOSE 8000
CMD ["gunicorn", "services.api.wsgi:app", "--bind", "0.0.0.0:8000"]
