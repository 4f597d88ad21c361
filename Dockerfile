# syntax=docker/dockerfile:1
# aigw-operator image. Build from the repository root:
#   docker build -t aigw-operator:0.1.0 .
# Both stages use the same base so the virtualenv's interpreter links stay valid when copied.
# Pin it by digest for a reproducible build, e.g.
#   --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest of the tag you tested>
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
# The locked dependencies first, each checked against its hash: the layer is reused while only
# the sources change, and every build installs the same files (requirements/compile makes the lock).
COPY requirements/runtime.lock ./requirements/
RUN /opt/venv/bin/pip install --require-hashes -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY src ./src
# The operator itself, nothing resolved beside the lock. Bytecode is compiled here because the
# root filesystem is read-only at run time. pip and setuptools leave the venv: the runtime image
# installs nothing.
RUN /opt/venv/bin/pip install --no-deps . \
    && /opt/venv/bin/python -m compileall -q /opt/venv \
    && /opt/venv/bin/aigw-operator --help > /dev/null \
    && /opt/venv/bin/python -m pip uninstall --yes pip setuptools \
    && ! test -e /opt/venv/bin/pip

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="aigw-operator" \
      org.opencontainers.image.description="Kubernetes operator for AI gateway and inference resources on SaaS APIs" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid, so Kubernetes can verify runAsNonRoot without looking the name up.
RUN groupadd --system --gid 10001 aigw \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin aigw
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# kopf's liveness endpoint when started with `run --liveness http://0.0.0.0:8080/healthz` (the chart does).
EXPOSE 8080
ENTRYPOINT ["aigw-operator"]
CMD ["run"]
