"""``pkiq submit``, ``pkiq jobs ...``, ``pkiq worker``, ``pkiq beat``, ``pkiq serve``:
the queue's front end. Jobs are written to the database first, then announced on the
broker; a message that never arrives is re-sent by the reconciler."""

from __future__ import annotations

import getpass
import sys
import time
from pathlib import Path

import click

from ca import jobs
from ca.authority import MAX_DAYS, get_ca
from ca.errors import PkiqError
from ca.profiles import DEFAULT_PROFILE, PROFILES

from .cli import App, _emit, _read_input, cli, json_option

PARTIAL = 9  # exit code: some files or jobs did not end as asked
SUBMIT_CHUNK = 100  # requests per transaction; announced as it commits, so workers start early


def _announce(app: App, job_ids: list[int]) -> str | None:
    """Tell the workers; if the broker is down the jobs stay queued for the reconciler."""
    if not job_ids:
        return None
    from worker.app import make_app
    from worker.tasks import announce

    celery = app.__dict__.get("celery")
    if celery is None:  # one Celery app (and its producer pool) per command
        celery = app.__dict__["celery"] = make_app(app.settings)
    try:
        announce(celery, job_ids, app.settings.queue)
    except Exception as exc:  # noqa: BLE001 - any broker failure leaves the jobs queued
        return (f"the broker did not take the message ({type(exc).__name__}: {exc}); the "
                "jobs stay queued and the reconciler sends them when it is back")
    return None


def queue_requests(app: App, ca_name: str, requests: list[bytes | PkiqError], *,
                   profile: str, requester: str, days: int | None = None,
                   node: str | None = None) -> tuple[list[dict], str | None]:
    """One chunk of ``pkiq submit``: the requests queued in one transaction, then the new
    queued jobs announced. Returns one row per request (``job_info`` plus ``new``, or state
    ``refused`` and the error; an error given in place of a request is reported as is) and
    the broker's warning, if any."""
    rows: list[dict] = []
    new_ids: list[int] = []
    readable = [r for r in requests if not isinstance(r, PkiqError)]
    with app.transaction() as session:
        done = iter(jobs.submit_many(session, get_ca(session, ca_name), readable,
                                     profile=profile, requester=requester, days=days,
                                     node=node, now=app.clock()))
        for request in requests:
            outcome = request if isinstance(request, PkiqError) else next(done)
            if isinstance(outcome, PkiqError):
                rows.append({"id": None, "state": "refused", "error": str(outcome)})
                continue
            info = jobs.job_info(outcome.job)
            if outcome.created and info["state"] == "queued":
                new_ids.append(info["id"])
            rows.append({"new": outcome.created, **info})
    return rows, _announce(app, new_ids)


def _read_or_error(path: Path) -> bytes | PkiqError:
    try:
        return _read_input(path)
    except PkiqError as exc:
        return exc


def _row(job_info: dict) -> str:
    tail = job_info["serial"] or job_info["error"] or ""
    return (f"{job_info['id']:>6}  {job_info['state']:<17} {job_info['ca']:<12} "
            f"{job_info['profile']:<18} {job_info['subject']}  {tail}")


@cli.command("submit")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ca", "ca_name", required=True, help="The CA to sign with.")
@click.option("--profile", type=click.Choice(list(PROFILES)), default=DEFAULT_PROFILE,
              show_default=True)
@click.option("--days", type=click.IntRange(1, MAX_DAYS), help="Validity.")
@click.option("--node", help="The Expressway node the certificate is for.")
@click.option("--requester", default=lambda: getpass.getuser(), show_default="current user")
@click.option("--wait", is_flag=True, help="Wait until every job is issued, refused or failed.")
@click.option("--timeout", type=click.IntRange(1), default=600, show_default=True,
              help="Seconds --wait waits.")
@json_option
@click.pass_obj
def submit(app: App, files, ca_name, profile, days, node, requester, wait, timeout, as_json):
    """Queue signing requests (PEM or DER), many at once."""
    results, warnings = [], set()
    with app.transaction() as session:
        get_ca(session, ca_name)  # an unknown CA fails the whole call, before anything
    show_bar = sys.stdout.isatty() and not as_json and len(files) > 1
    chunks = [files[i:i + SUBMIT_CHUNK] for i in range(0, len(files), SUBMIT_CHUNK)]
    with click.progressbar(length=len(files), label="submitting",
                           file=sys.stderr if show_bar else None, hidden=not show_bar) as bar:
        for chunk in chunks:
            rows, warning = queue_requests(
                app, ca_name, [_read_or_error(path) for path in chunk], profile=profile,
                requester=requester, days=days, node=node)
            results += [{"file": str(path), **row} for path, row in zip(chunk, rows,
                                                                        strict=True)]
            warnings.add(warning)
            bar.update(len(chunk))
    for warning in filter(None, warnings):
        click.echo(f"pkiq: warning: {warning}", err=True)
    if wait:
        results = _wait(app, results, timeout)
    _report(results, as_json, wait)
    ok = ("issued",) if wait else ("queued", "awaiting_approval", "signing", "issued")
    if any(r["state"] not in ok for r in results):
        sys.exit(PARTIAL)


def _wait(app: App, results: list[dict], timeout: int) -> list[dict]:
    deadline = time.monotonic() + timeout
    pending = {r["id"] for r in results if r["id"] and r["state"] in jobs.ACTIVE}
    by_id = {r["id"]: r for r in results if r["id"]}
    while pending and time.monotonic() < deadline:
        time.sleep(0.2)
        with app.transaction() as session:
            for job_id in list(pending):
                info = jobs.job_info(jobs.get_job(session, job_id))
                if info["state"] not in jobs.ACTIVE:
                    by_id[job_id].update(info)
                    pending.discard(job_id)
    for job_id in pending:
        by_id[job_id]["error"] = f"still {by_id[job_id]['state']} after {timeout} s"
    return results


def _report(results: list[dict], as_json: bool, waited: bool) -> None:
    if as_json:
        _emit(results, True, "")
        return
    for r in results:
        what = r.get("serial") or r.get("error") or ""
        flag = "" if r.get("new", True) else " (already submitted)"
        click.echo(f"{r['file']}: job {r['id'] or '-'} {r['state']}{flag} {what}".rstrip())
    counts: dict[str, int] = {}
    for r in results:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
    click.echo(f"{len(results)} file(s): {summary}", err=True)


@cli.group("jobs")
def jobs_group():
    """Look at and decide on queued signing jobs."""


@jobs_group.command("list")
@click.option("--state", type=click.Choice(jobs.STATES))
@click.option("--ca", "ca_name")
@click.option("--limit", type=click.IntRange(1, 10000), default=200, show_default=True)
@json_option
@click.pass_obj
def jobs_list(app: App, state, ca_name, limit, as_json):
    """The newest jobs first."""
    with app.transaction() as session:
        rows = [jobs.job_info(j) for j in jobs.list_jobs(session, state=state, ca_name=ca_name,
                                                         limit=limit)]
    _emit(rows, as_json, lambda: "\n".join(_row(r) for r in rows) or "no jobs")


@jobs_group.command("show")
@click.argument("job_id", type=int)
@json_option
@click.pass_obj
def jobs_show(app: App, job_id, as_json):
    with app.transaction() as session:
        info = jobs.job_info(jobs.get_job(session, job_id))
    _emit(info, as_json, lambda: "\n".join(f"{k}: {v}" for k, v in info.items()))


def _decide(app: App, job_ids, action, as_json, **kw):
    infos = []
    with app.transaction() as session:
        for job_id in job_ids:
            infos.append(jobs.job_info(action(session, job_id, now=app.clock(), **kw)))
    _announce_or_warn(app, [i["id"] for i in infos if i["state"] == "queued"])
    _emit(infos, as_json, lambda: "\n".join(_row(i) for i in infos))


def _announce_or_warn(app: App, job_ids: list[int]) -> None:
    warning = _announce(app, job_ids)
    if warning:
        click.echo(f"pkiq: warning: {warning}", err=True)


@jobs_group.command("approve")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option("--by", default=lambda: getpass.getuser(), show_default="current user")
@json_option
@click.pass_obj
def jobs_approve(app: App, job_ids, by, as_json):
    """Approve jobs awaiting approval (all or nothing)."""
    _decide(app, job_ids, jobs.approve, as_json, by=by)


@jobs_group.command("reject")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option("--reason", help="Recorded on the job.")
@click.option("--by", default=lambda: getpass.getuser(), show_default="current user")
@json_option
@click.pass_obj
def jobs_reject(app: App, job_ids, reason, by, as_json):
    """Reject jobs awaiting approval."""
    _decide(app, job_ids, jobs.reject, as_json, by=by, reason=reason)


@jobs_group.command("retry")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@json_option
@click.pass_obj
def jobs_retry(app: App, job_ids, as_json):
    """Queue failed jobs again."""
    _decide(app, job_ids, jobs.retry, as_json)


def _celery(argv: list[str]) -> None:
    from worker import app as celery_app

    celery_app.worker_main(argv) if argv[0] == "worker" else celery_app.start(argv)


@cli.command("worker", context_settings={"ignore_unknown_options": True})
@click.option("--concurrency", "-c", type=click.IntRange(1), help="Worker processes.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker_cmd(concurrency, celery_args):
    """Run a signing worker (celery -A worker worker); extra arguments go to Celery.

    Workers skip gossip, mingle and event heartbeats: pkiq's workers coordinate through the
    database, not through each other. The pool stays prefork even with -c 1: its main
    process fetches the next message while the child signs, which the solo pool cannot."""
    argv = ["worker", "--loglevel", "INFO", *WORKER_QUIET]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    _celery(argv + list(celery_args))


WORKER_QUIET = ("--without-gossip", "--without-mingle", "--without-heartbeat")


@cli.command("beat", context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat_cmd(celery_args):
    """Run the scheduler (celery -A worker beat): the job reconciler."""
    _celery(["beat", "--loglevel", "INFO", *celery_args])


@cli.command("serve", context_settings={"ignore_unknown_options": True})
@click.option("--concurrency", "-c", type=click.IntRange(1), default=2, show_default=True)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def serve_cmd(concurrency, celery_args):
    """The whole service on one host: workers and beat, on the configured (by default the
    embedded) broker and database."""
    _celery(["worker", "--beat", "--loglevel", "INFO", *WORKER_QUIET, "--concurrency",
             str(concurrency), *celery_args])
