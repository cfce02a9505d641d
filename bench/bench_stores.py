"""Node store publishing benchmark: what republishing costs after a refresh changed one CRL.

The estate (issue 11): ``--nodes`` Expressway nodes (default 100) in a fresh SQLite
database; ``--big-nodes`` of them (default 10) trust CA "Big", whose CRL has
``--big-entries`` entries (default 100,000), and CA "Small" (a 20-entry CRL); the others
trust Small only. Both CAs are outside pkiq: their certificates are on the trusted CA list
and their CRLs are installed as a refresh or an upload installs them (``service.crl.upload``,
validated, signature checked). Nodes have no server certificate: the trusted CAs and CRLs
are what a refresh changes, and they are nearly all of a store's bytes.

Measured in one run, each pass as the stores tick runs it (``service.stores.publish(...,
due_only=True)``, one node at a time, one transaction each):

- the first publish of every node (an empty stores folder);
- ``--rounds`` times: Big publishes a new CRL (number + 1, one more entry), it is
  installed (timed apart), then the pass: wall time, bytes written as the publisher
  reports them, bytes found on disk in the new generations, and per node whether anything
  in its store changed at all (files, links, the lock, the folder's own mtime);
- a pass with nothing changed (the fixed cost of looking at every node);
- unless ``--quick``: the same with twice as many Big nodes (a second estate, a round
  fewer), to see whether the time follows the number of changed nodes.

Baselines in the same run, on the same disk: the bytes the pass wrote, written again with
plain ``open/write/close`` (the physical limit, no durability) and with an ``fsync`` per
file (what pkiq does, minus everything else); and ``openssl rehash`` on one Big node's
trusted CAs and CRLs (the standard tool for the ``-CApath`` folder alone).

Goals (issue 11): time linear in the changed nodes; zero writes for unchanged nodes. Run
through ``bench/run stores``; results go to ``bench/results/stores-<time>.json`` and to
stdout as a table, progress to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.bench_sign import RESULTS_DIR, ROOT, MachineCpu, loadavg, log, machine_facts
from ca.nodes import NodeChanges
from service import ServiceContext, crl, nodes, stores, trust
from shell.settings import Settings
from tests import crlfactory as cf  # fast signed CRLs of any size

SMALL_ENTRIES = 20
ZERO_WRITES = "zero writes for unchanged nodes"
LINEAR = "time linear in the changed nodes"


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass
class Estate:
    """One database and stores folder with its nodes; ``big`` are the nodes trusting Big."""

    ctx: ServiceContext
    stores_dir: Path
    nodes: list[str]
    big: list[str]
    big_issuer: cf.Issuer
    big_entries: int
    base: dt.datetime  # thisUpdate of the first CRLs; each new one is a minute later
    big_number: int = 1


def build_estate(folder: Path, node_count: int, big_count: int, big_entries: int) -> Estate:
    """CAs on the trusted list, their CRLs installed, two trusted sets, the nodes."""
    settings = Settings(data_dir=folder / "data", database_url=f"sqlite:///{folder}/pkiq.db",
                        stores_dir=folder / "stores", ca_passphrase="pkiq stores benchmark")
    ctx = ServiceContext(settings, now_utc)
    small, big = cf.issuer("pkiq bench Small CA"), cf.issuer("pkiq bench Big CA")
    shas = {}
    for label, issuer in (("small", small), ("big", big)):
        shas[label] = trust.add(ctx, issuer.cert_pem)["added"][0]["sha256"]
    base = now_utc() - dt.timedelta(hours=2)
    next_update = base + dt.timedelta(days=7)
    crl.upload(ctx, cf.crl_der(SMALL_ENTRIES, ca=small, this_update=base,
                               next_update=next_update), source="bench: Small CRL")
    crl.upload(ctx, cf.crl_der(big_entries, ca=big, this_update=base, next_update=next_update),
               source="bench: Big CRL 1")
    nodes.create_set(ctx, "small-only", [shas["small"]])
    nodes.create_set(ctx, "with-big", [shas["small"], shas["big"]])
    names = [f"exp{i:03d}.example.com" for i in range(node_count)]
    step = node_count / big_count
    big_names = [names[int(k * step)] for k in range(big_count)]  # spread over the list
    for name in names:
        nodes.add_node(ctx, name, NodeChanges(
            role="E", trusted_set="with-big" if name in big_names else "small-only"))
    return Estate(ctx, folder / "stores", names, big_names, big, big_entries, base)


def new_big_crl(estate: Estate) -> float:
    """Big's next CRL (one more entry, a minute later), installed; seconds to install."""
    estate.big_number += 1
    der = cf.crl_der(estate.big_entries + estate.big_number - 1, number=estate.big_number,
                     ca=estate.big_issuer,
                     this_update=estate.base + dt.timedelta(minutes=estate.big_number),
                     next_update=estate.base + dt.timedelta(days=7))
    started = time.perf_counter()
    done = crl.upload(estate.ctx, der, source=f"bench: Big CRL {estate.big_number}")
    assert done["in_force"] and int(done["crl_number"]) == estate.big_number, done
    return time.perf_counter() - started


# ---------------------------------------------------------------- what a pass did on disk

def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under a node's store: (mode, size, mtime_ns, link target)."""
    out = {}
    if not root.exists():
        return out
    for path in [root, *root.rglob("*")]:
        info = os.lstat(path)
        target = os.readlink(path) if os.path.islink(path) else None
        out[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime_ns,
                                            target)
    return out


def on_disk_bytes(before: dict[str, tuple], after: dict[str, tuple]) -> int:
    """Bytes of the regular files that are new or changed between two snapshots."""
    return sum(entry[1] for name, entry in after.items()
               if before.get(name) != entry and entry[3] is None and entry[0] & 0o100000)


def proc_io() -> dict[str, int]:
    """This process's I/O counters (wchar: bytes handed to write(2), database included;
    write_bytes: bytes sent to the block layer)."""
    with open("/proc/self/io") as handle:
        return {k: int(v) for k, v in (line.split(": ") for line in handle)}


def run_pass(estate: Estate, label: str) -> dict:
    """One stores tick over every node, timed, with what each node's store looked like
    before and after."""
    roots = {name: estate.stores_dir / name for name in estate.nodes}
    before = {name: snapshot(root) for name, root in roots.items()}
    io_before = proc_io()
    started = time.perf_counter()
    outcomes = stores.publish(estate.ctx, passphrase=None, due_only=True)
    seconds = time.perf_counter() - started
    io_after = proc_io()
    after = {name: snapshot(root) for name, root in roots.items()}
    states: dict[str, int] = {}
    for outcome in outcomes:
        states[outcome.state] = states.get(outcome.state, 0) + 1
    failed = [o.view() for o in outcomes if o.state == "failed"]
    assert not failed, failed
    touched = sorted(name for name in estate.nodes if before[name] != after[name])
    published = sorted(o.node for o in outcomes if o.state == "published")
    reported = {o.node: o.bytes_written for o in outcomes}
    untouched = [name for name in estate.nodes if name not in published]
    result = {
        "pass": label, "seconds": round(seconds, 3), "states": states,
        "published": len(published),
        "bytes_reported": sum(reported.values()),
        "bytes_on_disk": sum(on_disk_bytes(before[n], after[n]) for n in estate.nodes),
        "nodes_touched_on_disk": len(touched),
        "unchanged_nodes": len(untouched),
        "unchanged_nodes_bytes_reported": sum(reported.get(n, 0) for n in untouched),
        "unchanged_nodes_touched_on_disk": len(set(untouched) & set(touched)),
        "process_wchar": io_after["wchar"] - io_before["wchar"],
        "process_write_bytes": io_after["write_bytes"] - io_before["write_bytes"],
        "process_write_syscalls": io_after["syscw"] - io_before["syscw"],
    }
    log(f"  {label}: {seconds:.2f} s, {states}, {result['bytes_on_disk']:,} bytes on disk, "
        f"{len(touched)} store(s) touched")
    return result


# ---------------------------------------------------------------- baselines

def generation_files(estate: Estate, node_names: list[str]) -> list[tuple[str, bytes]]:
    """The files of the current generation of each node, read into memory."""
    out = []
    for name in node_names:
        current = (estate.stores_dir / name / "current").resolve()
        for path in sorted(current.rglob("*")):
            if path.is_file():
                out.append((f"{name}/{path.relative_to(current)}", path.read_bytes()))
    return out


def plain_writes(files: list[tuple[str, bytes]], folder: Path, *, durable: bool) -> float:
    """Seconds to write ``files`` under ``folder`` with plain open/write/close (and an fsync
    per file and per folder when ``durable``)."""
    shutil.rmtree(folder, ignore_errors=True)
    started = time.perf_counter()
    made: set[Path] = set()
    for rel, data in files:
        path = folder / rel
        if path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(path.parent)
        with open(path, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
    if durable:
        for parent in made:
            fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    seconds = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    return seconds


def openssl_rehash(estate: Estate, node: str, folder: Path, runs: int) -> dict:
    """``openssl rehash`` on a folder holding one Big node's trusted CAs and CRLs, one per
    file under plain names, as an administrator would lay them out for ``-CApath``."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    capath = (estate.stores_dir / node / "current" / "capath").resolve()
    for index, path in enumerate(sorted(capath.iterdir())):
        kind = "crl" if ".r" in path.name else "ca"
        (folder / f"{kind}-{index}.pem").write_bytes(path.read_bytes())
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(["openssl", "rehash", str(folder)], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    links = sorted(p.name for p in folder.iterdir() if p.is_symlink())
    expected = sorted(p.name for p in capath.iterdir())
    return {"median_s": round(statistics.median(times), 4), "runs": runs,
            "same_names_as_pkiq_capath": links == expected, "links": links}


# ---------------------------------------------------------------- one estate

def bench_estate(workdir: Path, node_count: int, big_count: int, big_entries: int,
                 rounds: int, *, baselines: bool) -> dict:
    folder = workdir / f"estate-{big_count}"
    folder.mkdir()
    log(f"estate: {node_count} nodes, {big_count} trusting Big ({big_entries:,} entries) ...")
    started = time.perf_counter()
    estate = build_estate(folder, node_count, big_count, big_entries)
    setup_s = time.perf_counter() - started
    first = run_pass(estate, "first publish, every node")
    assert first["published"] == node_count, first
    changed, installs = [], []
    for number in range(rounds):
        installs.append(new_big_crl(estate))
        result = run_pass(estate, f"Big CRL changed (round {number + 1})")
        assert result["published"] == big_count, result
        changed.append(result)
    idle = run_pass(estate, "nothing changed")
    assert idle["published"] == 0, idle
    out = {"nodes": node_count, "big_nodes": big_count, "big_entries": big_entries,
           "setup_s": round(setup_s, 3), "first": first, "changed": changed, "idle": idle,
           "install_big_crl_s": [round(s, 3) for s in installs],
           "store_bytes_big_node": sum(len(d) for _n, d in
                                       generation_files(estate, estate.big[:1])),
           "store_bytes_small_node": sum(len(d) for _n, d in generation_files(
               estate, [n for n in estate.nodes if n not in estate.big][:1]))}
    if baselines:
        files = generation_files(estate, estate.big)
        scratch = workdir / "plain"
        plain = [plain_writes(files, scratch, durable=False) for _ in range(rounds)]
        durable = [plain_writes(files, scratch, durable=True) for _ in range(rounds)]
        out["baseline"] = {
            "bytes": sum(len(d) for _n, d in files), "files": len(files),
            "plain_write_s": round(statistics.median(plain), 4),
            "plain_write_fsync_s": round(statistics.median(durable), 4),
            "openssl_rehash_one_node": openssl_rehash(estate, estate.big[0],
                                                      workdir / "rehash", max(rounds, 3)),
        }
    estate.ctx.close()
    return out


# ---------------------------------------------------------------- report

def median_of(results: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in results)


def summarise(report: dict) -> dict:
    main = report["estates"][0]
    changed_s = median_of(main["changed"], "seconds")
    idle_s = main["idle"]["seconds"]
    per_changed = (changed_s - idle_s * main["changed"][0]["unchanged_nodes"] / main["nodes"]
                   ) / main["big_nodes"]
    base = main["baseline"]
    summary = {
        "changed_pass_s": round(changed_s, 3),
        "idle_pass_s": round(idle_s, 3),
        "per_unchanged_node_ms": round(1000 * idle_s / main["nodes"], 2),
        "per_changed_node_s": round(per_changed, 4),
        "changed_bytes": main["changed"][0]["bytes_on_disk"],
        "idle_pass_process_wchar": main["idle"]["process_wchar"],
        "vs_plain_write": round(changed_s / base["plain_write_s"], 1),
        "vs_plain_write_fsync": round(changed_s / base["plain_write_fsync_s"], 1),
        "per_changed_node_vs_openssl_rehash": round(
            per_changed / base["openssl_rehash_one_node"]["median_s"], 1),
        ZERO_WRITES: all(r["unchanged_nodes_bytes_reported"] == 0
                         and r["unchanged_nodes_touched_on_disk"] == 0
                         for e in report["estates"] for r in [*e["changed"], e["idle"]]),
    }
    if len(report["estates"]) > 1:
        double = report["estates"][1]
        ratio = median_of(double["changed"], "seconds") / changed_s
        summary["changed_pass_ratio_double_big_nodes"] = round(ratio, 2)
        summary[LINEAR] = 1.5 <= ratio <= 2.5  # twice the changed nodes, about twice the time
    return summary


def render(report: dict) -> str:
    rows = [f"{'estate / pass':<44} {'seconds':>8} {'published':>9} {'bytes on disk':>14} "
            f"{'touched':>7} {'unchanged w/ writes':>19}", "-" * 107]
    for estate in report["estates"]:
        head = f"{estate['nodes']} nodes, {estate['big_nodes']} Big"
        for result in [estate["first"], *estate["changed"], estate["idle"]]:
            rows.append(f"{head + ': ' + result['pass']:<44} {result['seconds']:>8.2f} "
                        f"{result['published']:>9} {result['bytes_on_disk']:>14,} "
                        f"{result['nodes_touched_on_disk']:>7} "
                        f"{result['unchanged_nodes_touched_on_disk']:>19}")
    main = report["estates"][0]
    base, summary = main["baseline"], report["summary"]
    rows += [
        "",
        f"store of a Big node: {main['store_bytes_big_node']:,} bytes; of a Small-only node: "
        f"{main['store_bytes_small_node']:,} bytes; installing a new Big CRL: "
        f"{statistics.median(main['install_big_crl_s']):.2f} s (not in the pass)",
        f"baseline, the same {base['bytes']:,} bytes in {base['files']} files: plain writes "
        f"{base['plain_write_s']:.3f} s, with fsync {base['plain_write_fsync_s']:.3f} s; "
        f"pkiq's pass {summary['vs_plain_write']}x / {summary['vs_plain_write_fsync']}x that",
        f"per changed node {summary['per_changed_node_s']:.3f} s; openssl rehash of one Big "
        f"node's folder {base['openssl_rehash_one_node']['median_s']:.3f} s "
        f"({summary['per_changed_node_vs_openssl_rehash']}x; same names as pkiq's capath: "
        f"{base['openssl_rehash_one_node']['same_names_as_pkiq_capath']})",
        f"per unchanged node {summary['per_unchanged_node_ms']:.1f} ms (a pass with nothing "
        f"changed: {summary['idle_pass_s']:.2f} s, {summary['idle_pass_process_wchar']:,} "
        "bytes handed to write(2) by this process, database included)",
        f"goal '{ZERO_WRITES}': {'MET' if summary[ZERO_WRITES] else 'NOT MET'}",
    ]
    if LINEAR in summary:
        rows.append(f"goal '{LINEAR}': twice the Big nodes took "
                    f"{summary['changed_pass_ratio_double_big_nodes']}x the time: "
                    f"{'MET' if summary[LINEAR] else 'NOT MET'} (1.5x to 2.5x counts)")
    rows.append(f"load {report['loadavg_start']} -> {report['loadavg_end']}, machine busy "
                f"{report['machine_busy_percent']}%, peak RSS {report['peak_rss_mb']} MB")
    return "\n".join(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, help="nodes (default 100; 20 quick)")
    parser.add_argument("--big-nodes", type=int, help="nodes trusting Big (default 10; 2 quick)")
    parser.add_argument("--big-entries", type=int,
                        help="entries on Big's CRL (default 100,000; 10,000 quick)")
    parser.add_argument("--rounds", type=int, help="changed-CRL passes (default 3; 1 quick)")
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--workdir", type=Path, help="where the estates go (default: a "
                        "temporary folder, removed afterwards)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args, _unknown = parser.parse_known_args(argv)  # bench/run passes every option on
    args.nodes = args.nodes or (20 if args.quick else 100)
    args.big_nodes = args.big_nodes or (2 if args.quick else 10)
    args.big_entries = args.big_entries or (10_000 if args.quick else 100_000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if not 0 < args.big_nodes <= args.nodes // 2:
        parser.error("--big-nodes must be between 1 and half of --nodes")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpu, load_start = MachineCpu(), loadavg()
    with tempfile.TemporaryDirectory(prefix="pkiq-bench-stores-", dir=args.workdir) as tmp:
        workdir = Path(tmp)
        fs = subprocess.run(["stat", "-f", "-c", "%T", str(workdir)], capture_output=True,
                            text=True).stdout.strip()
        estates = [bench_estate(workdir, args.nodes, args.big_nodes, args.big_entries,
                                args.rounds, baselines=True)]
        if not args.quick:
            estates.append(bench_estate(workdir, args.nodes, 2 * args.big_nodes,
                                        args.big_entries, max(1, args.rounds - 1),
                                        baselines=False))  # a round fewer: under 3 minutes
    report = {"benchmark": "stores", "machine": machine_facts(), "filesystem": fs,
              "method": __doc__, "args": {k: str(v) if isinstance(v, Path) else v
                                          for k, v in vars(args).items()},
              "estates": estates, "loadavg_start": load_start, "loadavg_end": loadavg(),
              "machine_busy_percent": cpu.busy_percent(),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    report["summary"] = summarise(report)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if args.quick else ""
    path = args.results_dir / f"stores-{report['date'].replace(':', '').replace('-', '')}" \
        f"{suffix}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(render(report))
    print(f"\nJSON: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0 if report["summary"][ZERO_WRITES] else 1


if __name__ == "__main__":
    sys.exit(main())
