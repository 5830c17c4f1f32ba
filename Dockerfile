# batchcancel in a container: reads order IDs on stdin, writes the report,
# summary and journal to /work (mount a folder there to keep them).
#
#   docker build -t batchcancel .
#   docker run -i --rm -e THANKSIO_API_TOKEN --user "$(id -u):$(id -g)" \
#       -v "$PWD:/work" batchcancel cancel - < ids.csv
#
# Base image: pinned to an exact version tag (Python 3.12.8 on Debian 12
# "bookworm", slim), not to a digest, because no registry could be reached
# where this file was written to read one.  For a build that can never
# change under you, add the digest you have checked:
#   docker build --build-arg PYTHON_IMAGE=python:3.12.8-slim-bookworm@sha256:... .
# Both stages use the same base, so the virtual environment's interpreter
# path (/usr/local/bin/python3.12) exists in the final image.
ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

# -- build: a wheel of batchcancel, installed with its dependencies into a
#    virtual environment.  Dependencies must come as wheels (--only-binary):
#    nothing is compiled, so no compiler is needed in either stage.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY batchcancel ./batchcancel
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .
RUN python -m venv /opt/batchcancel \
 && /opt/batchcancel/bin/pip install --no-cache-dir --only-binary=:all: /wheels/*.whl \
 && /opt/batchcancel/bin/python -m pip uninstall --yes pip \
 && /opt/batchcancel/bin/python -m compileall -q /opt/batchcancel/lib

# -- final: the clean base, the environment, and a user that is not root.
FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 batchcancel \
 && useradd --system --uid 10001 --gid 10001 --home-dir /work --create-home batchcancel
COPY --from=build /opt/batchcancel /opt/batchcancel
ENV PATH=/opt/batchcancel/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /work
# Exec form, no shell in between: batchcancel is PID 1 and gets docker
# stop's SIGTERM itself.  The kernel drops a signal to PID 1 only when the
# process left it at its default action; batchcancel installs its own
# SIGTERM and SIGINT handlers for the whole run (run.py,
# Job.install_signal_handlers), so it stops sending, writes the report and
# exits 143 within --grace seconds.  It starts no child processes, so no
# init is needed to reap them (`docker run --init` does no harm).
STOPSIGNAL SIGTERM
ENTRYPOINT ["batchcancel"]
CMD ["cancel", "-"]
