"""pkiq's Celery app (``celery -A worker worker`` / ``celery -A worker beat``) and its tasks.

The tasks are thin: they load a job by id and call ``ca.jobs``; all decisions live there.
"""

from .app import app

__all__ = ["app"]
