# batchcancel in a container: reads order IDs on stdin, writes the report to
# /work (mount a folder there to keep it).
#
#   docker build -t batchcancel .
#   docker run -i --rm -e THANKSIO_API_TOKEN -v "$PWD:/work" batchcancel < ids.csv
#
# Two stages: the first builds a virtual environment, the second copies only
# that environment onto a clean base, so no pip cache or build tool remains.
# Both stages use the same base so the environment's interpreter path holds.

ARG PYTHON_IMAGE=python:3.12.8-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY batchcancel ./batchcancel
RUN python -m venv /opt/batchcancel \
 && /opt/batchcancel/bin/pip install --no-cache-dir --no-compile . \
 && /opt/batchcancel/bin/python -m compileall -q /opt/batchcancel/lib

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --home-dir /work --create-home batchcancel
COPY --from=build /opt/batchcancel /opt/batchcancel
ENV PATH=/opt/batchcancel/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001
WORKDIR /work
# Exec form: batchcancel is PID 1 and receives docker stop's SIGTERM itself,
# so it finishes the report and exits 143 within --grace seconds.
ENTRYPOINT ["batchcancel"]
CMD ["cancel", "-"]
