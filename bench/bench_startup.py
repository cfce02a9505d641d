"""Start-up of the ``pkiq`` command: how long a short command takes from exec to exit.

Every CLI call pays for its imports before it does anything, so scripts that call ``pkiq``
in a loop (and the people typing it) feel this more than any signing rate. Measured here,
in one run and interleaved so that load hits every command alike:

- ``python -c pass``: the interpreter's own start, the floor under any Python command;
- ``python -c "import sqlalchemy.orm, pydantic_settings"``: the libraries pkiq reads its
  settings and database with, imported and nothing else: the floor under any command that
  opens the database (``ca list``);
- ``openssl x509 -noout -text``: the standard tool doing what ``pkiq x509 decode`` does;
- ``pkiq --help``, ``pkiq x509 decode CERT`` and ``pkiq ca list`` (a SQLite database with
  three CAs, migrated already), each as the installed console script runs it.

Goals (issue 8): ``--help`` and ``x509 decode`` under 0.25 s, ``ca list`` under 0.4 s (the
median on this machine). Results: JSON in bench/results/, a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench_sign import RESULTS_DIR, ROOT, MachineCpu, loadavg, log, machine_facts

GOALS = {"pkiq --help": 0.25, "pkiq x509 decode": 0.25, "pkiq ca list": 0.40}
FLOOR = "python -c pass"
DB_FLOOR = "import sqlalchemy.orm, pydantic_settings"


def prepare(folder: Path, pkiq: str) -> tuple[dict, Path]:
    """An environment with a migrated SQLite database holding three CAs, and a certificate."""
    env = {**os.environ, "PKIQ_DATA_DIR": str(folder / "data"),
           "PKIQ_CA_PASSPHRASE": "pkiq startup benchmark"}
    for name in ("PKIQ_DATABASE_URL", "PKIQ_CA_PASSPHRASE_FILE", "PKIQ_BROKER_URL"):
        env.pop(name, None)
    for name in ("Root", "Issuing", "Partner"):
        subprocess.run([pkiq, "ca", "create", name, "--subject", f"/O=Bench/CN={name}",
                        "--key-type", "ec-p256"], env=env, check=True, capture_output=True)
    cert = folder / "root.pem"
    cert.write_bytes(subprocess.run([pkiq, "ca", "show", "Root", "--pem"], env=env, check=True,
                                    capture_output=True).stdout)
    return env, cert


def commands(pkiq: str, cert: Path) -> dict[str, list[str]]:
    return {
        FLOOR: [sys.executable, "-c", "pass"],
        DB_FLOOR: [sys.executable, "-c", DB_FLOOR],
        "openssl x509 -noout -text": ["openssl", "x509", "-noout", "-text", "-in", str(cert)],
        "pkiq --help": [pkiq, "--help"],
        "pkiq x509 decode": [pkiq, "x509", "decode", str(cert)],
        "pkiq ca list": [pkiq, "ca", "list"],
    }


def measure(cmds: dict[str, list[str]], env: dict, rounds: int, cwd: Path) -> dict:
    """Each command ``rounds`` times, round-robin; wall seconds per call."""
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(rounds):
        for name, argv in cmds.items():
            started = time.perf_counter()
            subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - started)
    return {name: {"median_s": round(statistics.median(t), 4),
                   "p90_s": round(sorted(t)[int(0.9 * (len(t) - 1))], 4),
                   "min_s": round(min(t), 4), "runs": len(t)} for name, t in times.items()}


def render(report: dict) -> str:
    floor = report["results"][FLOOR]["median_s"]
    rows = [f"{'command':<40} {'median':>8} {'p90':>8} {'min':>8} {'x python':>9}  goal",
            "-" * 84]
    for name, r in report["results"].items():
        goal = GOALS.get(name)
        verdict = "" if goal is None else (
            f"< {goal:.2f} s {'MET' if r['median_s'] < goal else 'NOT MET'}")
        rows.append(f"{name:<40} {r['median_s']:>7.3f}s {r['p90_s']:>7.3f}s "
                    f"{r['min_s']:>7.3f}s {r['median_s'] / floor:>8.1f}x  {verdict}")
    decode = report["results"]["pkiq x509 decode"]["median_s"]
    tool = report["results"]["openssl x509 -noout -text"]["median_s"]
    listing = report["results"]["pkiq ca list"]["median_s"]
    libraries = report["results"][DB_FLOOR]["median_s"]
    rows.append(f"\npkiq ca list / importing its libraries alone: {listing / libraries:.2f}x "
                f"(+{listing - libraries:.3f} s)")
    rows.append(f"pkiq x509 decode / openssl x509 -text: {decode / tool:.1f}x; "
                f"load {report['loadavg_start']} -> {report['loadavg_end']}, "
                f"machine busy {report['machine_busy_percent']}%")
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="calls per command (default 30; 5 quick)")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args, _unknown = parser.parse_known_args(argv)  # bench/run passes every option on
    args.rounds = args.rounds or (5 if args.quick else 30)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pkiq = shutil.which("pkiq", path=str(Path(sys.executable).parent))
    if pkiq is None:
        log("no pkiq console script beside this Python: install the project first")
        return 2
    with tempfile.TemporaryDirectory(prefix="pkiq-bench-startup-") as tmp:
        folder = Path(tmp)
        env, cert = prepare(folder, pkiq)
        cmds = commands(pkiq, cert)
        measure(cmds, env, 2, folder)  # warm the page cache and .pyc files
        log(f"{args.rounds} rounds of {len(cmds)} commands ...")
        cpu, load_start = MachineCpu(), loadavg()
        results = measure(cmds, env, args.rounds, folder)
        report = {"benchmark": "startup", "machine": machine_facts(), "rounds": args.rounds,
                  "results": results, "goals_s": GOALS, "loadavg_start": load_start,
                  "loadavg_end": loadavg(), "machine_busy_percent": cpu.busy_percent(),
                  "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    path = args.results_dir / f"startup-{report['date'].replace(':', '').replace('-', '')}" \
        f"{suffix}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nJSON: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
