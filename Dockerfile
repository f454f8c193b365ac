# The recsys image: the `recsys` command line (pipeline steps and `recsys serve`), nothing else.
# Used by docker-compose.yml for both the one-shot pipeline job and the service.
# Not built on the machine this was written on (no Docker engine there); `.ci/run` validates the
# compose file with `docker-compose config`.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch FIRST, the CPU build, pinned like pyproject.toml: installed afterwards as a dependency it
# would resolve to the multi-GB CUDA build. Override TORCH_INDEX_URL to use another index.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install "torch==2.13.0" --index-url "$TORCH_INDEX_URL"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY recsys ./recsys
COPY service ./service
COPY pipelines ./pipelines
RUN pip install . && recsys --help >/dev/null

# An unprivileged user; /data is where the pipeline writes and the service reads (a volume).
RUN useradd --system --uid 10001 --home-dir /app recsys && mkdir /data && chown recsys /data
USER recsys
VOLUME ["/data"]
EXPOSE 8000

# Settings come from the environment (REDIS_URL, RECSYS_*: service/settings.py).
CMD ["recsys", "serve", "--model", "/data/model", "--host", "0.0.0.0", "--port", "8000"]
