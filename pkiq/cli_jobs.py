"""``pkiq submit``, ``pkiq jobs ...``, ``pkiq worker``, ``pkiq beat``, ``pkiq serve``: the
queue's front end over ``service.jobs``."""

from __future__ import annotations

import getpass
import sys
from pathlib import Path

import click

from ca import jobs
from ca.authority import MAX_DAYS
from ca.errors import PkiqError, WrongPassphrase
from ca.profiles import DEFAULT_PROFILE, PROFILES
from service import cas
from service import jobs as job_service

from .cli_common import PARTIAL, emit, json_option, pass_service, read_input, warn


def _read_or_error(path: Path) -> bytes | PkiqError:
    try:
        return read_input(path)
    except PkiqError as exc:
        return exc


def _row(job_info: dict) -> str:
    tail = job_info["serial"] or job_info["error"] or ""
    return (f"{job_info['id']:>6}  {job_info['state']:<17} {job_info['ca']:<12} "
            f"{job_info['profile']:<18} {job_info['subject']}  {tail}")


@click.command("submit")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--ca", "ca_name", required=True, help="The CA to sign with.")
@click.option("--profile", type=click.Choice(list(PROFILES)), default=DEFAULT_PROFILE,
              show_default=True, help="What the certificates are for (extensions, validity).")
@click.option("--days", type=click.IntRange(1, MAX_DAYS), help="Validity.")
@click.option("--node", help="The Expressway node the certificate is for.")
@click.option("--requester", default=lambda: getpass.getuser(), show_default="current user",
              help="Who asks; recorded on each job.")
@click.option("--wait", is_flag=True, help="Wait until every job is issued, refused or failed.")
@click.option("--timeout", type=click.IntRange(1), default=600, show_default=True,
              help="Seconds --wait waits.")
@json_option
@pass_service
def submit(ctx, files, ca_name, profile, days, node, requester, wait, timeout, as_json):
    """Queue signing requests (PEM or DER), many at once."""
    results, warnings = [], set()
    job_service.check_ca(ctx, ca_name)
    show_bar = sys.stdout.isatty() and not as_json and len(files) > 1
    chunk_size = job_service.SUBMIT_CHUNK
    chunks = [files[i:i + chunk_size] for i in range(0, len(files), chunk_size)]
    with click.progressbar(length=len(files), label="submitting",
                           file=sys.stderr if show_bar else None, hidden=not show_bar) as bar:
        for chunk in chunks:
            rows, warning = job_service.queue_requests(
                ctx, ca_name, [_read_or_error(path) for path in chunk], profile=profile,
                requester=requester, days=days, node=node)
            results += [{"file": str(path), **row} for path, row in zip(chunk, rows,
                                                                        strict=True)]
            warnings.add(warning)
            bar.update(len(chunk))
    warn(sorted(filter(None, warnings)))
    if wait:
        active = [r["id"] for r in results if r["id"] and r["state"] in jobs.ACTIVE]
        views = job_service.wait_for(ctx, active, timeout)
        for row in results:
            row.update(views.get(row["id"], {}))
    _report(results, as_json)
    ok = ("issued",) if wait else job_service.SETTLED_OK
    if any(r["state"] not in ok for r in results):
        sys.exit(PARTIAL)


def _report(results: list[dict], as_json: bool) -> None:
    if as_json:
        emit(results, True, "")
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


@click.group("jobs")
def jobs_group():
    """Look at and decide on queued signing jobs."""


@jobs_group.command("list")
@click.option("--state", type=click.Choice(jobs.STATES), help="Only jobs in this state.")
@click.option("--ca", "ca_name", help="Only jobs for this CA.")
@click.option("--limit", type=click.IntRange(1, 10000), default=200, show_default=True,
              help="At most this many, newest first.")
@json_option
@pass_service
def jobs_list(ctx, state, ca_name, limit, as_json):
    """The newest jobs first."""
    listing = job_service.list_jobs(ctx, state=state, ca_name=ca_name, limit=limit)
    rows = listing["jobs"]
    if listing["truncated"]:
        warn([f"showing the newest {limit} jobs; more match (use --limit or --state)"])
    emit(rows, as_json, lambda: "\n".join(_row(r) for r in rows) or "no jobs")


@jobs_group.command("show")
@click.argument("job_id", type=int)
@json_option
@pass_service
def jobs_show(ctx, job_id, as_json):
    """One job: state, request, decisions, serial or error."""
    info = job_service.show_job(ctx, job_id)
    emit(info, as_json, lambda: "\n".join(f"{k}: {v}" for k, v in info.items()))


def _decided(outcome, as_json) -> None:
    infos, warning = outcome
    warn([warning])
    emit(infos, as_json, lambda: "\n".join(_row(i) for i in infos))


@jobs_group.command("approve")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option("--by", default=lambda: getpass.getuser(), show_default="current user",
              help="Who approves; recorded on each job.")
@json_option
@pass_service
def jobs_approve(ctx, job_ids, by, as_json):
    """Approve jobs awaiting approval (all or nothing)."""
    _decided(job_service.approve(ctx, job_ids, by=by), as_json)


@jobs_group.command("reject")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@click.option("--reason", help="Recorded on the job.")
@click.option("--by", default=lambda: getpass.getuser(), show_default="current user",
              help="Who rejects; recorded on each job.")
@json_option
@pass_service
def jobs_reject(ctx, job_ids, reason, by, as_json):
    """Reject jobs awaiting approval."""
    _decided(job_service.reject(ctx, job_ids, by=by, reason=reason), as_json)


@jobs_group.command("retry")
@click.argument("job_ids", type=int, nargs=-1, required=True)
@json_option
@pass_service
def jobs_retry(ctx, job_ids, as_json):
    """Queue failed jobs again."""
    _decided(job_service.retry(ctx, job_ids), as_json)


# ---------------------------------------------------------------- running the service

WORKER_QUIET = ("--without-gossip", "--without-mingle", "--without-heartbeat")


def _check_keys(ctx) -> None:
    """A worker that can unlock no CA would fail every job: refuse to start, in one line;
    name the CAs it cannot unlock when it can unlock others."""
    report = cas.unlock_check(ctx)
    warn(report["notes"])  # keys re-encrypted at today's work factor, short passphrases
    if not report["unlocked"] and not report["locked"]:
        warn(["no CA yet: jobs are signed once one exists (pkiq ca create NAME ...)",
              report["passphrase_error"]])
    elif not report["unlocked"]:
        raise WrongPassphrase("no CA can be unlocked, so every job would fail: "
                              + "; ".join(f"{r['ca']}: {r['error']}" for r in report["locked"])
                              + " (set PKIQ_CA_PASSPHRASE_FILE to the CA passphrase file)")
    else:
        warn([f"cannot unlock CA {r['ca']}, its jobs will fail: {r['error']}"
              for r in report["locked"]])


def _celery(ctx, argv: list[str]) -> None:
    from worker.celery_app import make_app, prepare

    prepare(ctx.settings)
    app = make_app(ctx.settings)
    ctx.close()  # the workers make their own engines after the fork
    app.worker_main(argv) if argv[0] == "worker" else app.start(argv)


@click.command("worker", context_settings={"ignore_unknown_options": True})
@click.option("--concurrency", "-c", type=click.IntRange(1), help="Worker processes.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_service
def worker_cmd(ctx, concurrency, celery_args):
    """Run signing workers (celery -A worker worker); extra arguments go to Celery.

    Workers skip gossip, mingle and event heartbeats: pkiq's workers coordinate through the
    database, not through each other. The pool stays prefork even with -c 1: its main
    process fetches the next message while the child signs, which the solo pool cannot."""
    _check_keys(ctx)
    argv = ["worker", "--loglevel", "INFO", *WORKER_QUIET]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    _celery(ctx, argv + list(celery_args))


@click.command("beat", context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_service
def beat_cmd(ctx, celery_args):
    """Run the scheduler: job reconciler and CRL tick (celery -A worker beat)."""
    _celery(ctx, ["beat", "--loglevel", "INFO", *celery_args])


@click.command("serve", context_settings={"ignore_unknown_options": True})
@click.option("--concurrency", "-c", type=click.IntRange(1), default=2, show_default=True,
              help="Worker processes.")
@click.option("--web/--no-web", default=True, show_default=True,
              help="Also serve the web app (pkiq web: CA files and the nodes' CRL bundles) "
                   "on PKIQ_WEB_HOST:PKIQ_WEB_PORT.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@pass_service
def serve_cmd(ctx, concurrency, web, celery_args):
    """The whole service on one host: workers, beat and the web app.

    Runs on the configured (by default the embedded) broker and database."""
    _check_keys(ctx)
    if web:
        _start_web()
    _celery(ctx, ["worker", "--beat", "--loglevel", "INFO", *WORKER_QUIET, "--concurrency",
                  str(concurrency), *celery_args])


def _start_web() -> None:
    """``pkiq web`` as a child process beside the Celery worker (its own event loop and
    engine, nothing shared across the fork), stopped when serve exits and, through the
    kernel's parent-death signal, when serve is killed."""
    import atexit
    import signal
    import subprocess

    def die_with_parent() -> None:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    child = subprocess.Popen([sys.executable, "-m", "pkiq", "web"],
                             preexec_fn=die_with_parent)

    def stop() -> None:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
    atexit.register(stop)
