"""One load-generator process of the web benchmark: keep-alive pollers, each on its own
connection, asking for one URL again and again with the ETag it was last given (so the
server answers 304 until the file changes, then 200 once). Run by ``bench.bench_web``;
a process apart from the server and from the benchmark, so its CPU is its own.

Each poller is an ``asyncio.Protocol`` over a raw socket (uvloop): a request is one
``write`` of prepared bytes and a response one or two ``data_received`` calls, the least
Python a client can spend per request, leaving the server its share of the two cores.

    python -m bench.web_load '{"port": ..., "nodes": [FQDN, ...], "pollers": [i, ...],
                               "rate": ..., ...}'

Poller i asks for ``/nodes/FQDN/crls.zip`` of node i mod len(nodes).

Protocol with the parent: connect every poller and make one plain GET each (to learn the
ETag, as an Expressway's first fetch does); print ``ready``; read one line from stdin: the
wall-clock start time; poll (``rate`` requests/s in all, each poller at a fixed period with
a random phase; ``rate`` 0: each poller asks again as soon as it has its answer); stop
sending at the end, wait for the answers in flight, write to ``result_path`` as JSON what
was measured: requests sent from ``start + warmup`` on, their latency from send to the last
byte of the answer, per status."""

from __future__ import annotations

import array
import asyncio
import json
import random
import resource
import sys
import time

TIMEOUT = 5.0  # an answer later than this counts as an error


class Run:
    """What the pollers of this process share: the schedule and the tallies."""

    def __init__(self, config: dict, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.rate = float(config["rate"])
        self.pollers_total = int(config["pollers_total"])
        self.period = self.pollers_total / self.rate if self.rate else 0.0
        self.measure_from = self.end = float("inf")  # loop time (uvloop: whole ms)
        self.latency = {304: array.array("I"), 200: array.array("I")}  # microseconds
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.late_sends = 0  # timers that fired more than 10 ms late: this process was busy
        self.max_lag = 0.0
        self.behind = 0  # sends due before the answer to the last one came (a slow server)
        self.in_flight = 0
        self.timeline: dict[int, list] = {}  # per 250 ms of send time: [answers, 200s, max us]
        self.drained: asyncio.Future | None = None  # set once the sending has ended

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Poller(asyncio.Protocol):
    def __init__(self, run: Run, host: str, port: int, path: str):
        self.run, self.host, self.port, self.path = run, host, port, path
        self.transport = None
        self.etag = None
        self.buffer = b""
        self.sent_at = 0.0  # loop time, for the schedule and the measured window
        self.sent_clock = 0.0  # perf_counter, for the latency
        self.next_at = 0.0
        self.waiting = False  # a request is in flight
        self.timed = False  # ... and was given up on
        self.timer = None
        self.first: asyncio.Future = run.loop.create_future()
        self.request = b""

    def prepare(self) -> None:
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                 "User-Agent: pkiq-bench"]
        if self.etag:
            lines.append(f"If-None-Match: {self.etag}")
        self.request = ("\r\n".join(lines) + "\r\n\r\n").encode()

    # -------------------------------------------------- the connection
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.prepare()
        self.send()

    def connection_lost(self, exc) -> None:
        self.transport = None
        if not self.first.done():
            self.first.set_exception(ConnectionError("closed before the first answer"))
        elif self.waiting:
            self.finish_failed("timeout" if self.timed else "connection lost")

    def send(self, on_time: bool = True) -> None:
        self.timer = None
        run = self.run
        now = run.loop.time()
        if self.first.done() and now >= run.end:
            return
        if self.transport is None:
            run.loop.create_task(self.reconnect())
            return
        if on_time and run.period and self.first.done() and now - self.next_at > 0.010:
            run.late_sends += 1
            run.max_lag = max(run.max_lag, now - self.next_at)
        self.sent_at = now
        self.sent_clock = time.perf_counter()
        self.waiting = True
        run.in_flight += 1
        self.timer = run.loop.call_at(now + TIMEOUT, self.timed_out)
        self.transport.write(self.request)

    async def reconnect(self) -> None:
        try:
            await self.run.loop.create_connection(lambda: self, self.host, self.port)
        except OSError:
            self.run.error("connect failed")
            self.schedule()

    def timed_out(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.timed = True
            self.transport.abort()  # connection_lost counts it
        else:
            self.finish_failed("timeout")

    # -------------------------------------------------- an answer
    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            self.buffer = buffer
            return
        status = int(buffer[9:12])
        length = 0
        head = None
        if status != 304:  # RFC 9110 section 8.6: a 304 has no body, whatever it says
            head = buffer[:end].lower() + b"\r\n"
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                length = int(head[at + 17:head.find(b"\r\n", at + 2)])
        total = end + 4 + length
        if len(buffer) < total:
            self.buffer = buffer
            return
        self.buffer = buffer[total:]
        if status == 200 and head is not None:
            at = head.find(b"\r\netag:")
            if at >= 0:
                self.etag = buffer[at + 7:head.find(b"\r\n", at + 2)].strip().decode()
                self.prepare()
        self.finish(status)

    def finish(self, status: int) -> None:
        run = self.run
        took = time.perf_counter() - self.sent_clock
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.waiting = False
        run.in_flight -= 1
        if not self.first.done():
            self.first.set_result(status)
            return
        if self.sent_at >= run.measure_from:
            run.statuses[status] = run.statuses.get(status, 0) + 1
            bucket = run.latency.get(status)
            if bucket is not None:
                bucket.append(int(took * 1e6))
            slot = run.timeline.setdefault(int((self.sent_at - run.measure_from) * 4),
                                           [0, 0, 0])
            slot[0] += 1
            slot[1] += status == 200
            slot[2] = max(slot[2], int(took * 1e6))
        self.schedule()

    def finish_failed(self, kind: str) -> None:
        run = self.run
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.waiting = False
        run.in_flight -= 1
        self.buffer, self.timed = b"", False
        if self.sent_at >= run.measure_from:
            run.error(kind)
        self.schedule()

    def schedule(self) -> None:
        run = self.run
        if run.in_flight == 0 and run.drained is not None and not run.drained.done():
            run.drained.set_result(None)
        if run.period:
            self.next_at += run.period
            if self.next_at >= run.end:
                return
            if self.next_at <= run.loop.time():  # the answer came after the next send was due
                run.behind += 1
                self.timer = run.loop.call_soon(self.send, False)
            else:
                self.timer = run.loop.call_at(self.next_at, self.send)
        elif run.loop.time() < run.end:
            self.send()

    def start(self, at: float) -> None:
        self.next_at = at
        self.timer = self.run.loop.call_at(at, self.send)


async def main(config: dict) -> dict:
    loop = asyncio.get_running_loop()
    run = Run(config, loop)
    host, port = "127.0.0.1", int(config["port"])
    nodes = config["nodes"]
    pollers = [Poller(run, host, port, f"/nodes/{nodes[i % len(nodes)]}/crls.zip")
               for i in config["pollers"]]
    for batch in range(0, len(pollers), 100):  # no SYN flood against the listen backlog
        await asyncio.gather(*(loop.create_connection(lambda p=p: p, host, port)
                               for p in pollers[batch:batch + 100]))
    firsts = await asyncio.gather(*(p.first for p in pollers))
    if any(status != 200 for status in firsts) or any(p.etag is None for p in pollers):
        raise SystemExit(f"web_load: first GETs answered {sorted(set(firsts))}, "
                         f"{sum(p.etag is None for p in pollers)} without an ETag")
    print("ready", flush=True)
    start_wall = float(await loop.run_in_executor(None, sys.stdin.readline))
    start = loop.time() + (start_wall - time.time())
    run.measure_from = start + float(config["warmup"])
    run.end = run.measure_from + float(config["seconds"])
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    for poller in pollers:
        if run.period:
            poller.start(start + random.random() * run.period)
        else:
            poller.start(start + random.random() * 0.01)
    await asyncio.sleep(max(0.0, run.end - loop.time()) + 0.001)
    run.end = loop.time()  # no request is sent from here on
    if run.in_flight:
        run.drained = loop.create_future()
        try:
            await asyncio.wait_for(run.drained, TIMEOUT + 1)
        except TimeoutError:
            run.errors["not answered at the end"] = run.in_flight
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    for poller in pollers:
        if poller.transport is not None:
            poller.transport.close()
    return {"statuses": {str(k): v for k, v in run.statuses.items()}, "errors": run.errors,
            "latency_us": {str(k): list(v) for k, v in run.latency.items()},
            "late_sends": run.late_sends, "max_lag_ms": round(run.max_lag * 1e3, 2),
            "sends_behind_schedule": run.behind,
            "cpu_s": round(cpu_after.ru_utime + cpu_after.ru_stime
                           - cpu_before.ru_utime - cpu_before.ru_stime, 3),
            "pollers": len(pollers), "timeline": run.timeline}


if __name__ == "__main__":
    import uvloop

    config = json.loads(sys.argv[1])
    result = uvloop.run(main(config))
    # A file, not stdout: a pipe the event loop left non-blocking can lose a long line.
    with open(config["result_path"], "w") as handle:
        json.dump(result, handle)
