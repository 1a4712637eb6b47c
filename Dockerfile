# The Choreo worker: `docker compose up --build` (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what `pip install .` needs; the venv, .kafka/ and .git stay out of the image.
COPY pyproject.toml README.md topology.py ./
COPY choreo ./choreo
COPY agents ./agents
COPY streams ./streams
COPY tables ./tables
RUN pip install . \
    && useradd --create-home --uid 10001 choreo \
    && chown choreo /app

# Faust keeps its table data under the working directory (<app id>-data/).
USER choreo

ENV CHOREO_BROKER=kafka://kafka:29092 \
    CHOREO_WEB_PORT=6066
EXPOSE 6066

CMD ["faust", "-A", "topology", "worker", "-l", "info"]
