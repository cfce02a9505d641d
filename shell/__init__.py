"""The shell around the CA domain: settings from ``PKIQ_*`` variables, database engines and
Alembic migrations, files written whole or not at all. It knows nothing of the pipeline, the
use cases, Celery or any front end above it."""
