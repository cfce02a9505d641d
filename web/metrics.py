"""``GET /metrics``: Prometheus text format (prometheus_client), made at scrape time.

From the database (``service.metrics.snapshot``: one query per family): jobs by state, the
queue's depth and its oldest job, every CRL's age and seconds to nextUpdate by issuer, scope
and origin (pkiq's own CRLs and the installed ones), distribution points and issuers whose
last refresh failed, nodes whose store did not publish, their coverage gaps, drift findings
and refused REST credentials, and open rollouts by state. From the files worker processes
write (``shell.metrics``): the sign latency histogram, added up over every worker.

``pkiq_up`` is 0 when the database did not answer; the families it could not read are left
out and ``pkiq_scrape_error{family}`` says which (1). The scrape itself still answers 200.

No token unless PKIQ_METRICS_TOKEN is set: then ``Authorization: Bearer TOKEN`` (as
Prometheus sends it from ``authorization: {credentials: ...}``)."""

from __future__ import annotations

import hmac
import logging
import time

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from service import ServiceContext
from service.metrics import FAMILIES, snapshot
from shell.metrics import prepare_dir

log = logging.getLogger("pkiq.web")


def _seconds(moment) -> float | None:
    return None if moment is None else moment.timestamp()


class DatabaseCollector:
    """The families read from the database, made afresh on each scrape."""

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily  # states: gauges only
        started = time.monotonic()
        snap = snapshot(self.ctx)
        now = snap.now.timestamp()

        def gauge(name, text, labels=()):
            return GaugeMetricFamily(name, text, labels=list(labels))

        up = gauge("pkiq_up", "1 when the database answered this scrape, else 0")
        up.add_metric([], 1.0 if snap.up else 0.0)
        yield up
        errors = gauge("pkiq_scrape_error", "1 for a family this scrape could not read",
                       ["family"])
        for family in FAMILIES:
            errors.add_metric([family], 1.0 if family in snap.errors else 0.0)
        yield errors
        if snap.errors:
            log.warning("metrics: could not read %s: %s", ", ".join(snap.errors),
                        next(iter(snap.errors.values())))

        if "jobs" not in snap.errors:
            by_state = gauge("pkiq_jobs", "Signing jobs by state", ["state"])
            for state, count in snap.jobs.items():
                by_state.add_metric([state], count)
            yield by_state
            depth = gauge("pkiq_queue_depth", "Jobs queued for a worker")
            depth.add_metric([], snap.jobs.get("queued", 0))
            yield depth
            oldest = gauge("pkiq_queue_oldest_seconds",
                           "Age of the oldest queued job (0 when none is queued)")
            oldest.add_metric([], max(now - _seconds(snap.oldest_queued), 0.0)
                              if snap.oldest_queued else 0.0)
            yield oldest

        if not {"own_crls", "installed_crls"} <= set(snap.errors):
            labels = ["issuer", "scope", "origin", "ca"]
            age = gauge("pkiq_crl_age_seconds", "Seconds since the CRL's thisUpdate", labels)
            left = gauge("pkiq_crl_next_update_seconds",
                         "Seconds to the CRL's nextUpdate (negative: lapsed)", labels)
            for crl in snap.crls:
                key = [crl["issuer"], crl["scope"], crl["origin"], crl["ca"]]
                age.add_metric(key, now - _seconds(crl["this_update"]))
                left.add_metric(key, _seconds(crl["next_update"]) - now)
            yield age
            yield left

        if "distribution_points" not in snap.errors:
            failing = gauge("pkiq_crl_fetch_failing",
                            "1 when the distribution point's last fetch failed", ["url"])
            success = gauge("pkiq_crl_fetch_last_success_timestamp_seconds",
                            "When the distribution point last answered well", ["url"])
            for point in snap.points:
                failing.add_metric([point["url"]], 1.0 if point["failing"] else 0.0)
                if point["last_success"] is not None:
                    success.add_metric([point["url"]], _seconds(point["last_success"]))
            yield failing
            yield success

        if "crl_issuers" not in snap.errors:
            failing = gauge("pkiq_crl_issuer_failing",
                            "1 when the last attempt to install the issuer's CRL failed",
                            ["issuer"])
            for issuer in snap.issuers:
                failing.add_metric([issuer["issuer"]], 1.0 if issuer["failing"] else 0.0)
            yield failing

        if "nodes" not in snap.errors:
            failing = gauge("pkiq_store_publish_failing",
                            "1 when the node's last store publish failed", ["node"])
            attempts = gauge("pkiq_store_publish_failed_attempts",
                             "Failed store publishes of the node since its last success",
                             ["node"])
            gaps = gauge("pkiq_node_coverage_gaps",
                         "CAs the node's store lacks a usable CRL for", ["node"])
            published = gauge("pkiq_store_published_timestamp_seconds",
                              "When the node's store was last published", ["node"])
            for node in snap.nodes:
                key = [node["node"]]
                failing.add_metric(key, 1.0 if node["failing"] else 0.0)
                attempts.add_metric(key, node["attempts"] if node["failing"] else 0)
                gaps.add_metric(key, node["gaps"])
                if node["published_at"] is not None:
                    published.add_metric(key, _seconds(node["published_at"]))
            yield from (failing, attempts, gaps, published)

        if "node_apis" not in snap.errors:
            drift = gauge("pkiq_node_drift_findings",
                          "What the node holds that differs from pkiq's, at the last check",
                          ["node", "severity"])
            refused = gauge("pkiq_node_api_auth_refused",
                            "1 when the node refused pkiq's REST credentials", ["node"])
            for api in snap.node_apis:
                for severity, count in api["drift"].items():
                    drift.add_metric([api["node"], severity], count)
                refused.add_metric([api["node"]], 1.0 if api["auth_refused"] else 0.0)
            yield drift
            yield refused

        if "rollouts" not in snap.errors:
            rollouts = gauge("pkiq_rollouts", "Open REST rollouts by state (stopped: a push "
                             "failed; paused: a restart is awaited)", ["state"])
            for state, count in snap.rollouts.items():
                rollouts.add_metric([state], count)
            yield rollouts

        duration = gauge("pkiq_scrape_duration_seconds", "Time this scrape took to read "
                         "the database")
        duration.add_metric([], time.monotonic() - started)
        yield duration


class WorkerFiles:
    """The worker processes' metrics: prometheus_client's multiprocess files, added up."""

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx

    def collect(self):
        from prometheus_client.multiprocess import MultiProcessCollector

        try:
            folder = prepare_dir(self.ctx.settings)
        except OSError as exc:
            log.warning("metrics: cannot read the workers' metrics folder: %s", exc)
            return
        files = sorted(str(p) for p in folder.glob("*.db"))
        yield from MultiProcessCollector.merge(files, accumulate=True)


def metrics_route(ctx: ServiceContext):
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(ctx))
    registry.register(WorkerFiles(ctx))
    token = ctx.settings.metrics_token

    async def metrics(request: Request) -> Response:
        if token is not None:
            scheme, _, presented = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    presented.strip().encode(), token.encode()):
                return PlainTextResponse(
                    "/metrics needs Authorization: Bearer with PKIQ_METRICS_TOKEN\n", 401,
                    headers={"www-authenticate": 'Bearer realm="pkiq metrics"',
                             "cache-control": "no-store"})
        body = await run_in_threadpool(generate_latest, registry)
        return Response(body, headers={"content-type": CONTENT_TYPE_LATEST,
                                       "cache-control": "no-store"})
    return metrics
