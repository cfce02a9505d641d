# pkiq: one image for the CLI, the workers and beat.
# The image holds what the wheel holds: the packages pyproject.toml lists under
# [tool.setuptools.packages.find], with their data files. No folder is named here by hand;
# .dockerignore keeps local state (venv, caches, pkiq-data, secrets) out of the context.
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
# The pkiq user's uid and gid. Compose file secrets keep the host file's owner and mode, so
# building with your own uid lets the image read a 0600 secret you own (docker-compose.yml).
ARG PKIQ_UID=10001
RUN apt-get update && apt-get install -y --no-install-recommends openssl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid "$PKIQ_UID" pkiq \
    && useradd --uid "$PKIQ_UID" --gid pkiq --home-dir /var/lib/pkiq --create-home \
       --shell /usr/sbin/nologin pkiq
# The node stores' and the workers' metrics folders, owned by pkiq, so the compose volumes
# mounted on them start so too.
RUN install -d -o pkiq -g pkiq -m 0700 /var/lib/pkiq/stores /var/lib/pkiq/metrics
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir /tmp/wheels/*.whl
USER pkiq
ENV PKIQ_DATA_DIR=/var/lib/pkiq
WORKDIR /var/lib/pkiq
ENTRYPOINT ["pkiq"]
CMD ["serve"]
