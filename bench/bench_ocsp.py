"""OCSP responder benchmark (issue 15, performance (b)): requests/s and p99 with 50
concurrent keep-alive clients over loopback, cached and uncached. Goal: >= 3,000 cached
answers/s on this 2-core machine.

The estate: a fresh SQLite database in a temporary ``PKIQ_DATA_DIR`` (``--postgres``: a
PostgreSQL schema of its own), one CA ``Bench`` (``--key-type``, default P-256) with
``--leaves`` certificates (default 100) and its responder certificate, made through the use
cases (``service.cas``, ``service.ocsp.renew_responders``); then ``python -m pkiq web`` (one
process), the server an Expressway would ask.

Phases, each ``--clients`` connections (default 50) sending their next request the moment
they have their answer (``bench.api_load``, a process of its own: raw-socket asyncio on
uvloop):

1. cached: ``--count`` POSTs (default 30,000) without a nonce, cycling over the leaves, after
   one warm-up pass: each answer comes from the process's cache (one status-generation check,
   a dictionary look-up).
2. uncached (nonce): ``--uncached`` POSTs (default 3,000), each with a nonce of its own:
   every answer is a database read and a fresh signature, as for a client that sends nonces
   (openssl does by default).
3. uncached (unknown): the same count for serials the CA never issued (no nonce): also
   signed each time, since unknown answers are not kept.

Per phase: answers/s (200s over first send to last answer), latency p50/p95/p99/max, the web
server's CPU per answer. A sample of the answers is parsed and checked (successful, the
status expected, the nonce echoed). Results go to ``bench/results/ocsp-<time>.json`` and to
stdout as a table, progress to stderr; run through ``bench/run ocsp``."""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from bench.bench_sign import DEFAULT_POSTGRES_URL, RESULTS_DIR, ROOT, log, machine_facts
from bench.bench_web import Server, free_port, percentile, process_tree

PASSPHRASE = "pkiq ocsp benchmark passphrase"
CA_NAME = "Bench"
GOAL_CACHED = 3000.0


def latency(values: list[int]) -> dict:
    ordered = sorted(values)
    return {"count": len(ordered), "p50_ms": round(percentile(ordered, 0.50), 2),
            "p95_ms": round(percentile(ordered, 0.95), 2),
            "p99_ms": round(percentile(ordered, 0.99), 2),
            "max_ms": round(ordered[-1] / 1000, 2) if ordered else None}


def make_estate(folder: Path, database_url: str | None, key_type: str, leaves: int):
    """The CA, its leaves and its responder, through the use cases; returns the CA
    certificate and the leaves."""
    from service import ServiceContext, cas
    from service import ocsp as service_ocsp
    from shell.settings import Settings
    from tests.conftest import make_csr

    ctx = ServiceContext(Settings(data_dir=folder / "data", database_url=database_url))
    try:
        cas.create_ca(ctx, name=CA_NAME, subject="/C=GB/O=Example/CN=OCSP Bench CA",
                      key_type=key_type, days=3650, passphrase=PASSPHRASE.encode())
        certs = [cas.sign_request(ctx, CA_NAME, make_csr(f"h{i}.example.com"),
                                  passphrase=PASSPHRASE.encode(),
                                  profile="webserver").certificate for i in range(leaves)]
        service_ocsp.renew_responders(ctx, passphrase=PASSPHRASE.encode())
        return cas.show_ca(ctx, CA_NAME)[1], certs
    finally:
        ctx.close()


def request(issuer, cert=None, *, serial: int | None = None, nonce: bytes | None = None
            ) -> bytes:
    builder = ocsp.OCSPRequestBuilder()
    if cert is not None:
        builder = builder.add_certificate(cert, issuer, hashes.SHA1())
    else:
        from ca.ocsp import issuer_hashes
        name_hash, key_hash = issuer_hashes(issuer)["sha1"]
        builder = builder.add_certificate_by_hash(name_hash, key_hash, serial, hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def run_phase(folder: Path, server: Server, label: str, bodies: list[bytes], clients: int,
              expect: str, nonced: bool) -> dict:
    path = folder / f"bodies-{label}.b64"
    path.write_text("".join(base64.b64encode(b).decode() + "\n" for b in bodies))
    result_path = folder / f"load-{label}.json"
    config = {"port": server.port, "bodies_path": str(path), "clients": clients, "rate": 0,
              "result_path": str(result_path), "path": f"/ocsp/{CA_NAME}",
              "content_type": "application/ocsp-request", "base64_bodies": True,
              "ok_status": 200}
    child = subprocess.Popen([sys.executable, "-m", "bench.api_load", json.dumps(config)],
                             cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if child.stdout.readline().strip() != "ready":
        child.kill()
        raise SystemExit(f"load generator failed before the run:\n{server.log_tail()}")
    server.pids = process_tree(server.process.pid)
    before = server.cpu()
    child.stdin.write(f"{time.time() + 0.05}\n")
    child.stdin.flush()
    child.communicate(timeout=3600)
    after = server.cpu()
    if child.returncode:
        raise SystemExit(f"load generator exited with {child.returncode}")
    out = json.loads(result_path.read_text())
    result_path.unlink()
    answered = out["statuses"].get("200", 0)
    span = out["last_answer"] - out["first_send"]
    web_cpu = sum(after[p] - before.get(p, 0.0) for p in after)
    checked = check_answers(out["bodies_b64"], expect, nonced)
    result = {"phase": label, "clients": clients, "requests": len(bodies),
              "answered": answered, "statuses": out["statuses"], "errors": out["errors"],
              "seconds": round(span, 3), "answers_per_s": round(answered / span, 1),
              "latency": latency(out["latency_us"]), "web_cpu_s": round(web_cpu, 3),
              "web_cpu_us_per_answer": round(1e6 * web_cpu / answered, 1) if answered else None,
              "answers_checked": checked, "load_generator_cpu_s": out["cpu_s"]}
    if answered != len(bodies):
        raise SystemExit(f"{label}: {answered} of {len(bodies)} answered: {out['errors']} "
                         f"{out['statuses']}")
    lat = result["latency"]
    log(f"  {label}: {result['answers_per_s']:,.1f}/s, p50 {lat['p50_ms']} p99 "
        f"{lat['p99_ms']} max {lat['max_ms']} ms, web {result['web_cpu_us_per_answer']} "
        "CPU us/answer")
    return result


def check_answers(bodies_b64: list[str], expect: str, nonced: bool) -> int:
    """Every sampled answer is a successful, signed answer with the expected status (and,
    for nonced requests, a nonce); returns how many were checked."""
    for text in bodies_b64:
        answer = ocsp.load_der_ocsp_response(base64.b64decode(text))
        if answer.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise SystemExit(f"an answer was {answer.response_status}")
        if answer.certificate_status.name.lower() != expect:
            raise SystemExit(f"an answer said {answer.certificate_status}, not {expect}")
        has_nonce = any(isinstance(e.value, x509.OCSPNonce) for e in answer.extensions)
        if has_nonce != nonced:
            raise SystemExit("a nonce was not echoed" if nonced else "an unasked nonce")
    if not bodies_b64:
        raise SystemExit("no answer to check")
    return len(bodies_b64)


def warm(server: Server, bodies: list[bytes]) -> None:
    import http.client
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    for body in bodies:
        connection.request("POST", f"/ocsp/{CA_NAME}", body,
                           {"content-type": "application/ocsp-request"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise SystemExit(f"warm-up: HTTP {response.status}")
    connection.close()


def render(report: dict) -> str:
    lines = [f"OCSP responder, {report['clients']} keep-alive clients over loopback, "
             f"{report['key_type']} CA, {report['database']}, commit {report['commit']}",
             f"{'phase':<20} {'answers/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
             f"{'max ms':>8} {'CPU us/ans':>11}"]
    for phase in report["phases"]:
        lat = phase["latency"]
        lines.append(f"{phase['phase']:<20} {phase['answers_per_s']:>10,.1f} "
                     f"{lat['p50_ms']:>8} {lat['p95_ms']:>8} {lat['p99_ms']:>8} "
                     f"{lat['max_ms']:>8} {phase['web_cpu_us_per_answer']:>11}")
    cached = report["phases"][0]["answers_per_s"]
    lines.append(f"goal: >= {GOAL_CACHED:,.0f} cached answers/s: "
                 f"{'met' if cached >= GOAL_CACHED else 'NOT met'} ({cached:,.1f})")
    lines.append(f"load average before/after: {report['loadavg']}")
    return "\n".join(lines)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="bench/run ocsp", description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=30_000, help="cached requests")
    parser.add_argument("--uncached", type=int, default=3_000, help="uncached requests")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--leaves", type=int, default=100)
    parser.add_argument("--key-type", default="ec-p256")
    parser.add_argument("--quick", action="store_true", help="a smoke run (a tenth)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args, _unknown = parser.parse_known_args(argv)  # bench/run passes everyone's options
    if args.quick:
        args.count, args.uncached, args.leaves = 3_000, 300, 20
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="pkiq-bench-ocsp-") as tmp:
        folder = Path(tmp)
        database_url = None
        schema = None
        if args.postgres:
            database_url, schema = postgres_schema(args.postgres_url)
        log(f"making CA {CA_NAME} ({args.key_type}) with {args.leaves} leaves")
        issuer, leaves = make_estate(folder, database_url, args.key_type, args.leaves)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PKIQ_")}
        env.update(PKIQ_DATA_DIR=str(folder / "data"), PKIQ_CA_PASSPHRASE=PASSPHRASE)
        if database_url:
            env["PKIQ_DATABASE_URL"] = database_url
        port = free_port()
        server = Server("pkiq web", 1, [sys.executable, "-m", "pkiq", "web", "--host",
                                        "127.0.0.1", "--port", str(port), "--workers", "1"],
                        env, folder / "web.log", port)
        server.start("/healthz")
        load_before = [round(x, 2) for x in os.getloadavg()]
        try:
            plain = [request(issuer, cert) for cert in leaves]
            warm(server, plain)
            cached = [plain[i % len(plain)] for i in range(args.count)]
            nonced = [request(issuer, leaves[i % len(leaves)], nonce=os.urandom(16))
                      for i in range(args.uncached)]
            unknown = [request(issuer, serial=0x10000 + i) for i in range(args.uncached)]
            phases = [
                run_phase(folder, server, "cached", cached, args.clients, "good", False),
                run_phase(folder, server, "uncached (nonce)", nonced, args.clients, "good",
                          True),
                run_phase(folder, server, "uncached (unknown)", unknown, args.clients,
                          "unknown", False)]
        finally:
            server.stop()
            if schema:
                drop_schema(args.postgres_url, schema)
    report = {"benchmark": "ocsp", "commit": commit,
              "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "clients": args.clients, "key_type": args.key_type,
              "database": "PostgreSQL" if args.postgres else "SQLite", "leaves": args.leaves,
              "phases": phases, "loadavg": [load_before, [round(x, 2) for x in
                                                          os.getloadavg()]],
              "uptime": subprocess.run(["uptime"], capture_output=True, text=True
                                       ).stdout.strip(),
              "machine": machine_facts()}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"ocsp-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(render(report))
    log(f"results: {out}")
    return 0


def postgres_schema(url: str) -> tuple[str, str]:
    import secrets

    from sqlalchemy import create_engine, text
    schema = f"bench_ocsp_{secrets.token_hex(4)}"
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'create schema "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-csearch_path%3D{schema}", schema


def drop_schema(url: str, schema: str) -> None:
    from sqlalchemy import create_engine, text
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'drop schema "{schema}" cascade'))
    engine.dispose()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
