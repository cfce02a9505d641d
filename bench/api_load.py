"""The load generator of the API benchmark: ``clients`` keep-alive connections, each sending
``POST /api/v1/jobs`` with a bearer token and one prepared JSON body (a CSR, a new job)
after another. Run by ``bench.bench_api``; a process apart from the server and from the
benchmark, so its CPU is its own and it never competes with the server for the GIL.

Each client is an ``asyncio.Protocol`` over a raw socket on uvloop (as ``bench.web_load``):
a request is one ``write`` of prepared bytes, an answer one or two ``data_received`` calls,
the least Python a client can spend per request.

    python -m bench.api_load '{"port": ..., "token": ..., "bodies_path": ..., "clients": 50,
                               "rate": 500, "result_path": ...}'

``bodies_path`` holds one JSON body per line; each is sent exactly once. ``rate`` > 0
(paced): client i sends bodies i, i + clients, ... at a fixed period (clients / rate) from a
random phase; an answer that comes after the next send was due delays that send (counted
as ``behind``; the latency from the time the send was due is kept apart, so a slow server
cannot hide behind its own slowness). ``rate`` 0 (saturation): each client sends the next
unsent body the moment it has its answer.

Protocol with the parent: connect every client; print ``ready``; read one line from stdin
(the wall-clock start time); send until every body has been answered; write to
``result_path`` as JSON: per-request latency from send to the last byte (microseconds),
statuses, errors, the job ids of the 201s and how many said ``new``, first send and last
answer (wall clock), and this process's CPU time."""

from __future__ import annotations

import array
import asyncio
import base64
import json
import random
import resource
import sys
import time

TIMEOUT = 10.0  # an answer later than this counts as an error


class Run:
    def __init__(self, config: dict, loop: asyncio.AbstractEventLoop, requests: list[bytes]):
        self.loop = loop
        self.requests = requests
        self.rate = float(config["rate"])
        self.clients = int(config["clients"])
        self.period = self.clients / self.rate if self.rate else 0.0
        self.next_index = 0  # saturation: the next body to send
        self.latency = array.array("I")  # microseconds, send to last byte, every answer
        self.latency_due = array.array("I")  # paced: from the time the send was due
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.ids: list[int] = []
        self.new = 0
        self.samples: list[str] = []  # a few non-201 answers, for the report
        self.behind = 0
        self.answered = 0
        self.first_send = self.last_answer = 0.0
        self.done: asyncio.Future = loop.create_future()
        self.outstanding = len(requests)
        self.ok_status = config.get("ok_status")  # other than 201: bodies kept, not parsed
        self.bodies: set[bytes] = set()

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def settled(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0 and not self.done.done():
            self.done.set_result(None)


class Client(asyncio.Protocol):
    def __init__(self, run: Run, index: int):
        self.run, self.index = run, index
        self.transport = None
        self.buffer = b""
        self.queue: list[int] = []  # paced: the bodies this client sends, in order
        self.current = -1
        self.sent_clock = 0.0
        self.due_clock = 0.0
        self.timer = None
        self.connected: asyncio.Future = run.loop.create_future()

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.connected.set_result(None)

    def connection_lost(self, exc) -> None:
        self.transport = None
        if self.current >= 0:
            self.failed("connection lost")

    # -------------------------------------------------- sending
    def start(self, at: float) -> None:
        run = self.run
        if run.period:
            self.queue = list(range(self.index, len(run.requests), run.clients))
            self.queue.reverse()
            self.next_at = at
        self.timer = run.loop.call_at(at, self.send_next)

    def send_next(self) -> None:
        self.timer = None
        run = self.run
        if run.period:
            if not self.queue:
                return
            index = self.queue.pop()
            due = self.next_at
            self.next_at += run.period
            lag = run.loop.time() - due
            self.due_clock = time.perf_counter() - max(0.0, lag)
        else:
            if run.next_index >= len(run.requests):
                return
            index = run.next_index
            run.next_index += 1
            self.due_clock = 0.0
        if self.transport is None:
            run.error("not connected")
            run.settled()
            self.schedule()
            return
        self.current = index
        self.sent_clock = time.perf_counter()
        if not run.first_send:
            run.first_send = time.time()
        self.timer = run.loop.call_later(TIMEOUT, self.timed_out)
        self.transport.write(run.requests[index])

    def schedule(self) -> None:
        run = self.run
        if run.period:
            if not self.queue:
                return
            if self.next_at <= run.loop.time():
                run.behind += 1
                self.timer = run.loop.call_soon(self.send_next)
            else:
                self.timer = run.loop.call_at(self.next_at, self.send_next)
        else:
            self.send_next()

    def timed_out(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.transport.abort()  # connection_lost counts it
        elif self.current >= 0:
            self.failed("timeout")

    # -------------------------------------------------- answers
    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            self.buffer = buffer
            return
        head = buffer[:end].lower() + b"\r\n"
        at = head.find(b"\r\ncontent-length:")
        length = int(head[at + 17:head.find(b"\r\n", at + 2)]) if at >= 0 else 0
        total = end + 4 + length
        if len(buffer) < total:
            self.buffer = buffer
            return
        self.buffer = buffer[total:]
        self.finished(int(buffer[9:12]), buffer[end + 4:total], b"connection: close" in head)

    def finished(self, status: int, body: bytes, closing: bool) -> None:
        run = self.run
        now = time.perf_counter()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.current = -1
        run.last_answer = time.time()
        run.answered += 1
        run.latency.append(int((now - self.sent_clock) * 1e6))
        if self.due_clock:
            run.latency_due.append(int((now - self.due_clock) * 1e6))
        run.statuses[status] = run.statuses.get(status, 0) + 1
        if status == run.ok_status:
            if len(run.bodies) < 1000:  # distinct answers, a sample for the parent to check
                run.bodies.add(body)
        elif status == 201:
            answer = json.loads(body)
            run.ids.append(answer["id"])
            run.new += bool(answer.get("new"))
        elif len(run.samples) < 5:
            run.samples.append(f"{status} {body[:300].decode(errors='replace')}")
        run.settled()
        if closing:
            run.error("server closed the connection")
            while self.queue:
                self.queue.pop()
                run.error("never sent (connection gone)")
                run.settled()
            return
        self.schedule()

    def failed(self, kind: str) -> None:
        run = self.run
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.current = -1
        self.buffer = b""
        run.error(kind)
        run.settled()
        # no reconnect: a benchmark whose server drops connections has failed already;
        # the bodies this client still had are counted as errors
        while self.queue:
            self.queue.pop()
            run.error("never sent (connection gone)")
            run.settled()


def prepared(config: dict) -> list[bytes]:
    """The requests, ready to write. By default API job submissions; ``path``,
    ``content_type`` and ``base64_bodies`` (one base64 line per binary body, no token) make
    them another POST, such as OCSP requests (``bench.bench_ocsp``)."""
    head = (f"POST {config.get('path', '/api/v1/jobs')} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{config['port']}\r\nUser-Agent: pkiq-bench\r\n"
            + (f"Authorization: Bearer {config['token']}\r\n" if config.get("token") else "")
            + f"Content-Type: {config.get('content_type', 'application/json')}\r\n"
            + ("Accept: application/json\r\n" if "content_type" not in config else ""))
    out = []
    with open(config["bodies_path"], "rb") as handle:
        for line in handle:
            body = line.rstrip(b"\n")
            if config.get("base64_bodies"):
                body = base64.b64decode(body)
            out.append(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return out


async def main(config: dict) -> dict:
    loop = asyncio.get_running_loop()
    requests = prepared(config)
    run = Run(config, loop, requests)
    clients = [Client(run, i) for i in range(run.clients)]
    for client in clients:
        await loop.create_connection(lambda c=client: c, "127.0.0.1", int(config["port"]))
    print("ready", flush=True)
    start_wall = float(await loop.run_in_executor(None, sys.stdin.readline))
    start = loop.time() + (start_wall - time.time())
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    for client in clients:
        client.start(start + (random.random() * run.period if run.period
                              else random.random() * 0.005))
    try:
        await asyncio.wait_for(run.done, TIMEOUT + len(requests) / max(run.rate, 1.0) + 600)
    except TimeoutError:
        run.errors["unfinished at the end"] = run.outstanding
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    return {"statuses": {str(k): v for k, v in run.statuses.items()}, "errors": run.errors,
            "latency_us": list(run.latency), "latency_due_us": list(run.latency_due),
            "ids": run.ids, "new": run.new, "samples": run.samples, "behind": run.behind,
            "bodies_b64": [base64.b64encode(b).decode() for b in sorted(run.bodies)[:50]],
            "first_send": run.first_send, "last_answer": run.last_answer,
            "cpu_s": round(cpu_after.ru_utime + cpu_after.ru_stime
                           - cpu_before.ru_utime - cpu_before.ru_stime, 3)}


if __name__ == "__main__":
    import uvloop

    config = json.loads(sys.argv[1])
    result = uvloop.run(main(config))
    with open(config["result_path"], "w") as handle:  # a file: see bench.web_load
        json.dump(result, handle)
