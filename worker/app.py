"""The Celery application, configured from PKIQ_* settings.

Delivery is at least once: late acknowledgement, redelivery when a worker is lost, one
message prefetched at a time. Exactly-once issuance comes from the job row lock in
``ca.jobs.run_job``, not from the broker. Redis loses queued messages on restart (it keeps
nothing on disk here) and the embedded filesystem broker drops a message once a worker has
read it; either way the reconciler on beat finds the job still queued and sends it again.
"""

from __future__ import annotations

from celery import Celery

from pkiq.settings import Settings


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # beat keeps its file here
    app = Celery("pkiq", include=["worker.tasks", "scheduler.tasks"])
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
            "reconcile-signing-jobs": {
                "task": "worker.tasks.reconcile",
                "schedule": float(settings.reconcile_seconds),
            },
            # The CRL updater decides on each tick from the database (the daily time, the
            # overlap of pkiq's CRLs, open alerts), so a change needs no beat restart.
            "crl-tick": {
                "task": "scheduler.tasks.tick",
                "schedule": float(settings.crl_tick_seconds),
            },
        },
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
    )
    if app.conf.broker_url.startswith("filesystem"):
        queue = settings.queue_dir
        for sub in ("messages", "processed", "control"):
            (queue / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
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
    return app


app = make_app()
