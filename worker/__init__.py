"""pkiq's Celery app and its thin tasks (``celery -A worker worker`` / ``celery -A worker
beat`` find the app as ``worker.app``, built on first use from PKIQ_* settings).

The tasks load jobs by id and call ``ca.jobs``, or run the CRL updater's tick from
``scheduler``; all decisions live there."""


def __getattr__(name: str):
    if name in ("app", "celery"):  # PEP 562: nothing is built when the package is imported
        from .celery_app import default_app

        return default_app()
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
