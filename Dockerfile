# One image for the broker and the operator: `millstream serve` (the default command) runs a
# broker on /data, `millstream operator` the Kubernetes operator. The chart runs both from it, so
# a release never mixes versions.

# Build stage: install the project and its dependencies into a virtual environment, which is all
# the runtime stage copies (no pip cache, no sources, no build tools).
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/millstream
# Only what `pip install .` reads (.dockerignore allows nothing else), so that edits to tests
# or docs do not invalidate this layer.
COPY pyproject.toml README.md ./
COPY millstream/ millstream/
COPY broker/ broker/
COPY operator/ operator/
# pip and setuptools are needed to install, not to run: they leave with the build stage.
RUN /opt/millstream/bin/pip install --no-cache-dir ".[operator]" \
    && /opt/millstream/bin/pip uninstall --yes pip setuptools

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="millstream" \
      org.opencontainers.image.description="Kafka-style event-streaming broker and its Kubernetes operator" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, numeric, unprivileged user: Kubernetes' runAsNonRoot can only verify a numeric one.
# /data is the broker's data directory, owned by that user for runs without a mounted volume.
RUN groupadd --system --gid 10001 millstream \
    && useradd --system --uid 10001 --gid millstream --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin millstream \
    && mkdir /data \
    && chown millstream:millstream /data
COPY --from=build /opt/millstream /opt/millstream
# Bytecode was compiled at install time; the root filesystem is read-only in the chart.
# Unbuffered output keeps logs in order and whole when a pod is killed.
ENV PATH=/opt/millstream/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /data
EXPOSE 9092
ENTRYPOINT ["millstream"]
CMD ["serve", "--host", "0.0.0.0", "--data-dir", "/data"]
