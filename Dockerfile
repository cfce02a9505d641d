# pkiq: one image for the CLI, the workers and beat.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends openssl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /var/lib/pkiq --create-home pkiq
WORKDIR /opt/pkiq
COPY pyproject.toml README.md ./
COPY ca ca
COPY pkiq pkiq
COPY worker worker
RUN pip install --no-cache-dir .
USER pkiq
ENV PKIQ_DATA_DIR=/var/lib/pkiq
ENTRYPOINT ["pkiq"]
CMD ["serve"]
