# rpa-gateway as a container: the pinned runtime dependencies, the package, the example projects.
# Used by the astron-agent compose override in the README.  Logs go to stdout (docker logs).
FROM python:3.11-slim

WORKDIR /app
COPY requirements.lock pyproject.toml README.md ./
COPY src ./src
COPY projects ./projects
# The lock pins dev tools too; as constraints it only fixes the versions of what is installed.
RUN pip install --no-cache-dir --constraint requirements.lock . \
    && useradd --system --home-dir /data --create-home rpa

USER rpa
ENV RPA_PROJECTS_DIR=/app/projects \
    RPA_DATA_DIR=/data
EXPOSE 19999
CMD ["rpa-gateway", "serve"]
