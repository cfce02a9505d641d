"""Publishing from a process of its own, for the node-store tests that need one: two
publishers racing for one store, or a publisher under a file-size limit (a real EFBIG from
write(2), whoever runs the tests: root is not exempt from RLIMIT_FSIZE).

    python -m tests.store_child ROOT CONTENTS.pickle [FSIZE_LIMIT]

publishes each StoreContent in the pickled list, in order, and prints one JSON line:
``{"outcomes": [[changed, generation], ...], "error": null | [class name, message]}``.
"""

from __future__ import annotations

import json
import pickle
import resource
import signal
import sys
from pathlib import Path

from ca.errors import PkiqError
from shell.stores import NodeStore


def main(root: str, contents_path: str, fsize_limit: str | None = None) -> None:
    contents = pickle.loads(Path(contents_path).read_bytes())
    if fsize_limit is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so write(2) fails with EFBIG
        limit = int(fsize_limit)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    store = NodeStore(Path(root), keep=1000)
    outcomes, error = [], None
    try:
        for content in contents:
            outcome = store.publish(content)
            outcomes.append([outcome.changed, outcome.generation])
    except PkiqError as exc:
        error = [type(exc).__name__, str(exc)]
    print(json.dumps({"outcomes": outcomes, "error": error}))


if __name__ == "__main__":
    main(*sys.argv[1:])
