"""The Celery application, built by a factory from PKIQ_* settings: importing this module
creates, connects and writes nothing.

Delivery is at least once: late acknowledgement, redelivery when a worker is lost, one
message prefetched at a time. Exactly-once issuance comes from the job row lock in
``ca.jobs.run_jobs``, not from the broker. Redis loses queued messages on restart (it keeps
nothing on disk here) and the embedded filesystem broker drops a message once a worker has
read it; either way the reconciler on beat finds the job still queued and sends it again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from celery import Celery, beat, signals

from scheduler.schedule import beat_entries
from shell.settings import Settings, load_settings

SIGN_TASK = "worker.tasks.sign_jobs"
RECONCILE_TASK = "worker.tasks.reconcile"
JOBS_PER_MESSAGE = 25


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or load_settings()
    app = Celery("pkiq", include=["worker.tasks"])
    app.conf.update(
        broker_url=settings.effective_broker_url,
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # results live in the database, on the job
        worker_hijack_root_logger=False,
        timezone="UTC",
        enable_utc=True,
        beat_schedule={
            "reconcile-signing-jobs": {"task": RECONCILE_TASK,
                                       "schedule": float(settings.reconcile_seconds)},
            **beat_entries(settings.crl_tick_seconds, settings.store_tick_seconds,
                           settings.drift_check_seconds),
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        beat_scheduler="worker.celery_app:FileScheduler",
    )
    if app.conf.broker_url.startswith("filesystem"):
        # kombu's filesystem transport, with messages renamed into place (worker.fs_transport)
        app.conf.broker_transport = "worker.fs_transport:Transport"
        queue = settings.queue_dir
        app.conf.broker_transport_options = {
            "data_folder_in": str(queue / "messages"),
            "data_folder_out": str(queue / "messages"),
            "processed_folder": str(queue / "processed"),
            "control_folder": str(queue / "control"),
            "store_processed": False,
            "polling_interval": 0.1,
        }
    else:
        # Redis: a message unacknowledged this long (a worker died holding it) is redelivered.
        app.conf.broker_transport_options = {"visibility_timeout": settings.job_timeout_seconds}
    app.conf.pkiq_settings = settings
    # `celery -A worker worker` starts here without pkiq's CLI: make the folders then.
    signals.celeryd_init.connect(_prepare_worker, weak=False, dispatch_uid="pkiq.prepare")
    # pkiq's log lines (PKIQ_LOG_FORMAT) instead of Celery's, the task each line is from,
    # and the sign latency metrics the web app serves (shell.metrics).
    signals.setup_logging.connect(_setup_logging, weak=False, dispatch_uid="pkiq.logging")
    signals.task_prerun.connect(_task_context, weak=False, dispatch_uid="pkiq.task_context")
    signals.task_postrun.connect(_task_done, weak=False, dispatch_uid="pkiq.task_done")
    signals.worker_init.connect(_enable_metrics, weak=False, dispatch_uid="pkiq.metrics")
    return app


def prepare(settings: Settings) -> None:
    """Make the data directory (beat's schedule file lives there) and the embedded broker's
    folders, private to the service's user. Called by every entry point that runs or feeds
    the queue, never on import."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.effective_broker_url.startswith("filesystem"):
        for sub in ("messages", "processed", "control"):
            (settings.queue_dir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)


def _prepare_worker(sender=None, instance=None, **_kw) -> None:
    prepare(instance.app.conf.pkiq_settings)


def _setup_logging(loglevel=None, **_kw) -> None:
    from shell.logs import configure

    configure(load_settings().log_format, loglevel or "INFO")


_task_tokens: dict = {}


def _task_context(task_id=None, task=None, **_kw) -> None:
    from shell.logs import bind

    _task_tokens[task_id] = bind(task=getattr(task, "name", None), task_id=task_id)


def _task_done(task_id=None, **_kw) -> None:
    from shell.logs import unbind

    token = _task_tokens.pop(task_id, None)
    if token is not None:
        with contextlib.suppress(ValueError):  # made in another context: nothing to undo
            unbind(token)


def _enable_metrics(sender=None, **_kw) -> None:
    """In the worker's main process, before its pool forks: record metrics in the shared
    folder, and first delete the files this host's dead processes left there."""
    from shell import metrics

    folder = metrics.enable(sender.app.conf.pkiq_settings)
    metrics.clean_dead(folder)


class FileScheduler(beat.PersistentScheduler):
    """Celery's file-backed beat schedule. Before it opens the file (``celery -A worker beat``
    included) the data dir and, on the embedded broker, the queue folders beat sends into
    are made, private to the service's user."""

    def setup_schedule(self):
        prepare(self.app.conf.pkiq_settings)
        Path(self.schedule_filename).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        super().setup_schedule()


@cache
def default_app() -> Celery:
    """The app ``celery -A worker`` finds (``worker.app``), made on first use."""
    return make_app()


class CeleryAnnouncer:
    """The service layer's job announcer over Celery: job ids, ``JOBS_PER_MESSAGE`` to a
    message, over one pooled producer (one broker connection) for the lot. The app is made
    on the first announcement, so commands that queue nothing never touch the broker."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._app: Celery | None = None

    def __call__(self, job_ids: Sequence[int]) -> None:
        if self._app is None:
            prepare(self.settings)
            self._app = make_app(self.settings)
        announce(self._app, job_ids)


def announce(app: Celery, job_ids: Sequence[int], queue: str | None = None) -> None:
    """Send ``job_ids`` to the workers. Raises if the broker cannot be reached; the jobs
    then stay queued for the reconciler."""
    if not job_ids:
        return
    with app.producer_or_acquire() as producer:
        producer.connection.ensure_connection(max_retries=1, timeout=5)
        for start in range(0, len(job_ids), JOBS_PER_MESSAGE):
            app.send_task(SIGN_TASK, args=[list(job_ids[start:start + JOBS_PER_MESSAGE])],
                          queue=queue or app.conf.task_default_queue, producer=producer)
