"""A local worker process: ``python -m hyperpop.backends._worker FD PARENT_PID``.

Started by :class:`hyperpop.backends.local.LocalBackend` as a fresh interpreter: it never
imports the driver's ``__main__`` (so the script that started the run needs no main guard).
Over the socket ``FD`` it first receives ``("init", {...})``: the driver's ``sys.path`` (so the
trainable's own modules import as they do in the driver), the trainable's factory pickled by
value, the checkpoint folder and its settings; then it serves tasks.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection


def main(argv: list[str] | None = None) -> None:
    """Serve tasks over the socket the driver passed (see the module docstring)."""
    args = sys.argv[1:] if argv is None else argv
    fd, parent = int(args[0]), int(args[1])
    from hyperpop.backends.processes import _die_with_parent, _worker_main

    _die_with_parent(parent)  # first: a driver that dies now takes this worker with it
    conn = Connection(fd)
    try:
        kind, init = conn.recv()
    except (EOFError, OSError):
        return
    if kind != "init":
        conn.send(("fatal", f"a worker expected its settings first, got {kind!r}"))
        return
    path = [p for p in init["path"] if p not in sys.path]
    sys.path[:0] = path
    _worker_main(
        conn,
        init["factory"],
        init["root"],
        init["name"],
        init["cache"],
        init["threads"],
        parent,
        init.get("log_dir"),
        init.get("cache_bytes"),
        init.get("rank", 0),
    )


if __name__ == "__main__":
    main()
