"""Fetches from a public address that redirect into internal ones, run inside a network
namespace of its own (``tests/test_crl_hostile_fetch.py`` starts it with ``unshare``): there
a public address (1.2.3.4) can be put on the loopback interface beside loopback, private,
link-local and unique-local ones, and names resolve through the namespace's own
/etc/hosts, so the real resolver and real connections are tried, with no fake in between.

    python -m tests.netns_child SPEC.json

The spec names the database file for the refresh. Prints one JSON line.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from contextlib import ExitStack
from pathlib import Path

SECRET = b"INTERNAL-ONLY aws_secret=AKIAIOSFODNN7EXAMPLE\n"
PUBLIC, PUBLIC_NAME, PUBLIC2 = "1.2.3.4", "crl.partner.example", "1.2.3.5"
INTERNAL = {"loopback": "127.0.0.1", "private": "10.0.0.8", "allowed": "10.0.0.9",
            "metadata": "169.254.169.254", "unique-local": "fd00::8", "v6-loopback": "::1"}
HOSTS = {  # the namespace's /etc/hosts (names -> addresses)
    PUBLIC_NAME: [PUBLIC], "crl2.partner.example": [PUBLIC2],
    "internal.partner.example": ["10.0.0.8"], "mixed.partner.example": [PUBLIC, "10.0.0.8"],
}
ADDRESSES = [PUBLIC, PUBLIC2, *INTERNAL.values()]


def main(spec_file: str) -> dict:
    from ca import crl_config
    from scheduler.fetch import FetchLimits, Validator, fetch_all
    from scheduler.refresh import refresh
    from shell.db import make_engine, migrate, session_factory, transaction
    from tests.httpd import LocalServer, Reply, redirect

    spec = json.loads(Path(spec_file).read_text())
    with ExitStack() as stack:
        public = stack.enter_context(LocalServer(host=PUBLIC))
        public2 = stack.enter_context(LocalServer(host=PUBLIC2))
        internal = {kind: stack.enter_context(LocalServer(host=address))
                    for kind, address in INTERNAL.items()}
        for server in internal.values():
            server.route("/secret", Reply(body=SECRET))
        public2.route("/a.crl", Reply(body=b"not a CRL, but public"))
        port = internal["private"].port
        targets = {  # path on the public server -> where it redirects
            kind: server.url("/secret") for kind, server in internal.items()
            if kind != "allowed"}
        targets.update({
            "allowed": internal["allowed"].url("/secret"),
            "name": f"http://internal.partner.example:{port}/secret",
            "mixed": f"http://mixed.partner.example:{port}/secret",
            "mapped": f"http://[::ffff:127.0.0.1]:{internal['loopback'].port}/secret",
            "public": f"http://crl2.partner.example:{public2.port}/a.crl",
        })
        for kind, location in targets.items():
            public.route(f"/to-{kind}", redirect(location))
        named = f"http://{PUBLIC_NAME}:{public.port}"
        urls = {kind: f"{named}/to-{kind}" for kind in targets}
        # Points that are internal themselves may lead into internal networks.
        internal["private"].route("/to-loopback", redirect(internal["loopback"].url("/secret")))
        urls["internal point"] = internal["private"].url("/to-loopback")
        # A public name with an internal address too: refused at the connection itself.
        urls["mixed point"] = f"http://mixed.partner.example:{port}/secret"
        network = crl_config.crl_network(allow_internal="10.0.0.9")
        limits = FetchLimits(connect_timeout=2, read_timeout=2, total_timeout=4, retries=0)
        results = fetch_all([(u, Validator()) for u in urls.values()], limits=limits,
                            network=network)
        fetched = {kind: {"outcome": r.outcome, "error": r.error,
                          "secret": SECRET in (r.body or b"")}
                   for kind, r in zip(urls, results, strict=True)}
        asked = {kind: server.paths() for kind, server in internal.items()}
        for server in internal.values():
            server.requests.clear()

        # The same points through a whole refresh, into a database the test then reads.
        now = dt.datetime.now(dt.UTC)
        engine = make_engine(f"sqlite:///{spec['database']}")
        migrate(engine)
        sessions = session_factory(engine)
        with transaction(sessions) as session:
            crl_config.update_settings(session, now, timeout_seconds=4)
            crl_config.add_points(session, list(urls.values()), now)
        report = refresh(sessions, lambda: now, trigger="manual", network=network)
        engine.dispose()
        return {"fetched": fetched, "asked": asked,
                "asked_in_refresh": {kind: s.paths() for kind, s in internal.items()},
                "refresh": [p.as_dict() for p in report.points], "urls": urls}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
