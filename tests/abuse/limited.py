"""Run ``wsi-her2 ARGS`` under an address-space limit and report its peak memory.

Usage: ``python -m tests.abuse.limited LIMIT_BYTES ARGS...``. The last line on stderr is
``peak_rss_kb=N`` (the process's own maximum resident set, children included), written at exit.
A reader that tried to allocate what a bomb declares hits the limit (MemoryError: exit 1, not 4)
instead of taking the machine down.
"""

from __future__ import annotations

import atexit
import resource
import sys


def _own_peak_kb() -> int:
    # VmHWM starts afresh at exec; ru_maxrss would carry the RSS of the process that forked this one.
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _report() -> None:
    own = _own_peak_kb()
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # worker processes, forked from this one
    sys.stderr.write(f"\npeak_rss_kb={max(own, children)}\n")
    sys.stderr.flush()


if __name__ == "__main__":
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    atexit.register(_report)
    from wsi_her2_cli.errors import run_guarded
    from wsi_her2_cli.main import cli

    code = run_guarded(cli, sys.argv[2:])
    sys.stdout.flush()
    sys.exit(code)
