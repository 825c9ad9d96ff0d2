"""A warm process that forks one `train.py` run per request, for the kill -9 chain of test_faults.py.

Importing torch costs seconds per process; this process imports it once and forks a child per run,
so the 26 real processes of the chain (each really killed with SIGKILL) cost a fraction of a second
each. The parent runs one warm-up training itself (torch's first ops cost ~3 s, which every child
would otherwise pay again) with one thread only (forking after a pool of OpenMP threads started is
unsafe), so every child computes exactly like every other.

Protocol: one JSON request per stdin line, {"argv": [...], "env": {...}, "log": path, "warmup": bool};
one JSON reply per stdout line, {"rc": exit status, negative for a signal, as subprocess reports it}.
A warm-up request runs in this process (no fault may be set), every other one in a forked child.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def serve() -> None:
    sys.path.insert(0, os.getcwd())
    import torch
    import torch.utils.tensorboard  # noqa: F401  (imported once, here, not in every child)

    import train

    torch.set_num_threads(1)
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("warmup"):
            with open(request["log"], "w") as log:
                sys.stdout, sys.stderr = log, log
                try:
                    rc = train.main(request["argv"])
                finally:
                    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            print(json.dumps({"rc": rc}), flush=True)
            continue
        pid = os.fork()
        if pid == 0:  # the child: one training run
            rc = 99
            try:
                os.environ.clear()
                os.environ.update(request["env"])
                log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(log, 1)
                os.dup2(log, 2)
                rc = train.main(request["argv"])
            except BaseException:  # reported through the log and the exit status
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(rc)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
