# syntax=docker/dockerfile:1
# One image for every WrenchAI process; the entrypoint is the `wrenchai` command line and
# docker-compose.yml picks the subcommand per service (api, projector, topics create, ...).

FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A virtualenv is one directory to copy into the runtime stage, away from the system Python.
RUN python -m venv /opt/wrenchai
WORKDIR /src

# Dependencies first, read from pyproject.toml, so a change to the source alone reuses this
# layer instead of downloading every wheel again.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && /opt/wrenchai/bin/pip install -r /tmp/requirements.txt

COPY events/ events/
COPY processors/ processors/
COPY projections/ projections/
COPY api/ api/
COPY wrenchai/ wrenchai/
RUN /opt/wrenchai/bin/pip install --no-deps . \
    && /opt/wrenchai/bin/wrenchai --help > /dev/null


FROM python:3.11-slim

ENV PATH=/opt/wrenchai/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WRENCH_LOG_FORMAT=json

# PyTensor compiles the quality model's C code at run time (the InspectorAgent's fits);
# without a compiler it falls back to pure Python, many times slower.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

# A fixed numeric id, so orchestrators can check runAsNonRoot and volumes can be chowned.
RUN groupadd --system --gid 10001 wrenchai \
    && useradd --system --uid 10001 --gid wrenchai --home-dir /var/lib/wrenchai \
        --create-home --shell /usr/sbin/nologin wrenchai

COPY --from=build /opt/wrenchai /opt/wrenchai

USER 10001:10001
WORKDIR /var/lib/wrenchai
EXPOSE 8000

ENTRYPOINT ["wrenchai"]
CMD ["--help"]
