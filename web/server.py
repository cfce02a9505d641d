"""Serving the web app with uvicorn (uvloop and httptools when installed): ``run`` for a
command or ``pkiq serve``, ``make_server`` for a caller that runs it in its own thread."""

from __future__ import annotations

import gc

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from service import ServiceContext
from service.downloads import ca_versions
from shell.logs import dict_config

from .app import FrontDoor, make_app

# uvicorn's own logging, and pkiq's lines (failures, a database that stopped answering)
# in the same form on the same stream: text, or JSON with PKIQ_LOG_FORMAT=json.
LOG_CONFIG = dict_config(LOGGING_CONFIG, "text")


def log_config(settings) -> dict:
    return dict_config(LOGGING_CONFIG, settings.log_format)


def make_server(ctx: ServiceContext, host: str | None = None, port: int | None = None, *,
                access_log: bool = False, refresh_seconds: float = 1.0) -> uvicorn.Server:
    """A uvicorn server for the app over ``ctx``, on ``host``:``port`` (by default
    PKIQ_WEB_HOST and PKIQ_WEB_PORT; port 0 takes a free one). ``server.run()`` serves until
    ``server.should_exit`` is set; in the main thread, also until SIGINT or SIGTERM.

    No access log unless asked: a thousand pollers make two thousand lines a second that
    say nothing, and writing them costs a quarter of the server's time. Errors are logged."""
    config = uvicorn.Config(
        FrontDoor(make_app(ctx, refresh_seconds=refresh_seconds)),
        host=host or ctx.settings.web_host,
        port=ctx.settings.web_port if port is None else port,
        access_log=access_log, server_header=False, log_config=log_config(ctx.settings),
        # Pollers keep their connection between polls: let them, up to a minute.
        timeout_keep_alive=60)
    return uvicorn.Server(config)


def app_from_environment():
    """The app over a context made from PKIQ_* in this process: what each uvicorn worker
    process builds when there are several (uvicorn starts them afresh, so they cannot share
    the caller's context)."""
    from shell.settings import load_settings
    from worker.celery_app import CeleryAnnouncer

    settings = load_settings()
    # jobs submitted through the API are announced to the workers, as pkiq submit does
    app = FrontDoor(make_app(ServiceContext(settings, announcer=CeleryAnnouncer(settings))))
    settle_heap()
    return app


def settle_heap() -> None:
    """What the process built to start (modules, the app, its models: about 160,000 objects)
    is kept out of the cyclic garbage collector's full passes, which otherwise walk all of
    it a few times a minute under load, 55-85 ms each (measured with ``gc.callbacks``
    under ``bench/run api``), an answer's worth of stall every time. For a process that
    serves until it stops: garbage among those objects is never collected."""
    gc.collect()
    gc.freeze()


def run(ctx: ServiceContext, host: str | None = None, port: int | None = None, *,
        workers: int = 1, access_log: bool = False) -> None:
    """Serve until SIGINT or SIGTERM. The database is opened (and brought up to the current
    schema) first, so a wrong PKIQ_DATABASE_URL fails here rather than at the first request.
    With ``workers`` above 1, each worker process makes its own context from PKIQ_*."""
    ca_versions(ctx)
    if workers == 1:
        server = make_server(ctx, host, port, access_log=access_log)
        settle_heap()
        server.run()
        return
    uvicorn.run("web.server:app_from_environment", factory=True, workers=workers,
                host=host or ctx.settings.web_host,
                port=ctx.settings.web_port if port is None else port,
                access_log=access_log, server_header=False,
                log_config=log_config(ctx.settings), timeout_keep_alive=60)
