"""``pkiq verify`` against a CRL of a million entries, beside ``openssl verify -crl_check_all``.

A 3-certificate chain (EC P-256 root, intermediate, leaf) and the intermediate's CRL with
``--entries`` entries (default 1,000,000; ``tests.crlfactory`` splices them in, signed), the
root's CRL empty. pkiq checks through the use case ``service.verify.verify_files`` with one
``CrlCache`` kept between checks, as the web app or a long-lived caller keeps it: the first
check (timed apart) parses the CRL, verifies its signature and finds the serial with
cryptography's scan in Rust, as a one-shot ``pkiq verify`` does; the second (the revoked
leaf, untimed) builds the serial index; each later one reads the certificate and the
trusted list, validates the path with pyhanko-certvalidator and looks the serials up.
``--checks`` (default 1,000) later checks are timed one by one. ``openssl verify`` re-reads
and re-parses everything per run, so it runs ``--openssl-runs`` times (default 10) on the
same files and its time is per run.

Both must say "valid" for the good leaf and "revoked" for a leaf whose serial is in the
middle of the CRL, or the run fails: a fast wrong answer is no answer.

Run through ``bench/run verify``; results go to ``bench/results/verify-<time>.json`` and to
stdout as a table, progress to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bench.bench_sign import RESULTS_DIR, ROOT, loadavg, log, machine_facts
from ca.verify import RevocationSettings
from service.verify import Check, CrlCache, verify_files
from tests import crlfactory as cf

AT = cf.T0 + dt.timedelta(hours=1)
FIRST_SERIAL = 1000


def _ca(name: str, issuer: cf.Issuer | None) -> cf.Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bench"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer.cert.subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(cf.T0 - dt.timedelta(days=1))
               .not_valid_after(cf.T0 + dt.timedelta(days=3650))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                            False, False), critical=True)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                              False))
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return cf.Issuer(key, cert)


def _leaf(issuer: cf.Issuer, serial: int) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peer.example.com")]))
            .issuer_name(issuer.cert.subject).public_key(key.public_key())
            .serial_number(serial).not_valid_before(cf.T0 - dt.timedelta(days=1))
            .not_valid_after(cf.T0 + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("peer.example.com")]),
                           False)
            .sign(issuer.key, hashes.SHA256()))


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_files(work: Path, entries: int) -> dict[str, Path]:
    root = _ca("Bench Root", None)
    issuing = _ca("Bench Issuing", root)
    files = {
        "root": work / "root.pem", "issuing": work / "issuing.pem",
        "good": work / "good.pem", "revoked": work / "revoked.pem",
        "big_crl": work / "issuing-crl.pem", "root_crl": work / "root-crl.pem",
        "crls": work / "crls.pem",
    }
    files["root"].write_bytes(_pem(root.cert))
    files["issuing"].write_bytes(_pem(issuing.cert))
    files["good"].write_bytes(_pem(_leaf(issuing, FIRST_SERIAL + entries + 7)))
    files["revoked"].write_bytes(_pem(_leaf(issuing, FIRST_SERIAL + entries // 2)))
    log(f"signing a CRL of {entries:,} entries")
    big = cf.pem(cf.crl_der(entries, ca=issuing, first_serial=FIRST_SERIAL))
    small = cf.pem(cf.crl_der(0, ca=root))
    files["big_crl"].write_bytes(big)
    files["root_crl"].write_bytes(small)
    files["crls"].write_bytes(big + small)
    return files


def pkiq_check(files: dict[str, Path], which: str, cache: CrlCache) -> str:
    check = Check(files[which].read_bytes(), (files["issuing"].read_bytes(),), AT,
                  "serverAuth", "peer.example.com",
                  RevocationSettings(use_ocsp=False, use_crls=True, cdp_downloads=False,
                                     fallback="revoked"))
    outcome = verify_files(check, [files["root"]], [files["big_crl"], files["root_crl"]],
                           now=AT, cache=cache)
    return outcome.verdict.result


def openssl_check(files: dict[str, Path], which: str) -> tuple[bool, str]:
    done = subprocess.run(
        ["openssl", "verify", "-CAfile", str(files["root"]), "-untrusted",
         str(files["issuing"]), "-CRLfile", str(files["crls"]), "-crl_check_all",
         "-attime", str(int(AT.timestamp())), str(files[which])],
        capture_output=True, text=True, timeout=600)
    return done.returncode == 0, (done.stdout + done.stderr).strip().splitlines()[-1]


def _git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--checks", type=int, default=1000)
    parser.add_argument("--openssl-runs", type=int, default=10)
    parser.add_argument("--quick", action="store_true",
                        help="100,000 entries, 100 checks, 3 openssl runs")
    args, _ignored = parser.parse_known_args(argv)
    if args.quick:
        args.entries, args.checks, args.openssl_runs = 100_000, 100, 3
    load_start = loadavg()
    with tempfile.TemporaryDirectory(prefix="pkiq-bench-verify-") as tmp:
        files = make_files(Path(tmp), args.entries)
        cache = CrlCache()
        log("pkiq: first check (parse, signature, index)")
        start = time.perf_counter()
        first = pkiq_check(files, "good", cache)
        first_s = time.perf_counter() - start
        revoked = pkiq_check(files, "revoked", cache)
        if (first, revoked) != ("valid", "invalid"):
            raise SystemExit(f"pkiq answered {first}/{revoked}, not valid/invalid")
        log(f"pkiq: {args.checks} checks")
        times = []
        for _ in range(args.checks):
            start = time.perf_counter()
            result = pkiq_check(files, "good", cache)
            times.append(time.perf_counter() - start)
            if result != "valid":
                raise SystemExit(f"pkiq answered {result} for the good leaf")
        ssl_good, ssl_good_text = openssl_check(files, "good")
        ssl_revoked, ssl_revoked_text = openssl_check(files, "revoked")
        if not ssl_good or ssl_revoked:
            raise SystemExit(f"openssl answered {ssl_good_text!r} / {ssl_revoked_text!r}")
        log(f"openssl verify: {args.openssl_runs} runs")
        ssl_times = []
        for _ in range(args.openssl_runs):
            start = time.perf_counter()
            ok, text = openssl_check(files, "good")
            ssl_times.append(time.perf_counter() - start)
            if not ok:
                raise SystemExit(f"openssl: {text}")
        crl_bytes = files["big_crl"].stat().st_size
    pkiq_mean = statistics.fmean(times)
    ssl_mean = statistics.fmean(ssl_times)
    ordered = sorted(times)
    result = {
        "benchmark": "verify", "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "commit": _git_commit(), "loadavg_start": load_start, "machine": machine_facts(),
        "entries": args.entries, "crl_pem_bytes": crl_bytes, "checks": args.checks,
        "openssl_runs": args.openssl_runs,
        "pkiq_first_s": round(first_s, 3),
        "pkiq_per_check_ms": {"mean": round(pkiq_mean * 1000, 2),
                              "median": round(statistics.median(times) * 1000, 2),
                              "p99": round(ordered[int(0.99 * (len(ordered) - 1))] * 1000, 2)},
        "openssl_per_check_ms": {"mean": round(ssl_mean * 1000, 1),
                                 "min": round(min(ssl_times) * 1000, 1)},
        "ratio": round(pkiq_mean / ssl_mean, 4),
        "goal": "pkiq per check <= 1/10 of openssl's",
        "met": pkiq_mean <= ssl_mean / 10,
        "uptime": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
        "loadavg_end": loadavg(),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"verify-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    p, s = result["pkiq_per_check_ms"], result["openssl_per_check_ms"]
    print(f"pkiq verify vs openssl verify -crl_check_all, {args.entries:,}-entry CRL "
          f"({crl_bytes / 2**20:.1f} MiB PEM), 3-certificate chain")
    print(f"  pkiq first check (parse + signature + scan): {first_s:8.3f} s")
    print(f"  pkiq per later check ({args.checks}):  mean {p['mean']:8.2f} ms  median "
          f"{p['median']:.2f} ms  p99 {p['p99']:.2f} ms")
    print(f"  openssl per run ({args.openssl_runs}):          mean {s['mean']:8.1f} ms  min "
          f"{s['min']:.1f} ms")
    print(f"  ratio pkiq/openssl: {result['ratio']:.4f} (goal <= 0.1: "
          f"{'met' if result['met'] else 'NOT met'})")
    print("  method: service.verify.verify_files with one CrlCache (CRL parsed, "
          "signature checked and serials indexed once); openssl re-parses per run")
    print("  (index built on the second check, untimed)")
    print(f"  {result['uptime']}  commit {result['commit']}  results {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
