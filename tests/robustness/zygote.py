"""Run many `sessrec` command lines, each in its own forked process, from one warm interpreter.

`python -m sessrec fit ...` spends ~5 s importing Lightning before it reads its first option; a table of
70 bad inputs run as fresh interpreters would spend minutes importing. This server imports the CLI once,
then forks one child per command line: each child is a real process that runs `sessrec.cli.main(argv)`
in its own working directory, with stdout and stderr in files, and ends with the CLI's own exit status.
A crash (a segmentation fault, an abort in free()) ends the child by a signal, which the parent reports
as a negative status, exactly as `subprocess` would.

Protocol: one JSON object a line on stdin, {"argv": [...], "cwd": "...", "stdout": path, "stderr": path,
"timeout": seconds, optionally "exec": Python code run first}; one JSON line back on stdout, {"status": int} (-N for signal N, -999 for a timeout).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time


def _child(request: dict) -> None:
    os.chdir(request["cwd"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = open(os.devnull)  # noqa: SIM115 (the child ends with os._exit)
    code = 1
    try:
        if "exec" in request:  # the harness's own test: code that must end the child by a signal
            exec(request["exec"])
        from sessrec.cli import main

        main(request["argv"])
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # a bug, not a user error: the traceback is what the test looks for
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)  # -N for a signal
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -999
        time.sleep(0.02)


def serve() -> None:
    import lightning.pytorch  # noqa: F401  (the slow imports, once)

    import sessrec.cli  # noqa: F401
    import sessrec.lightning_cli  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        status = _wait(pid, float(request.get("timeout", 300)))
        print(json.dumps({"status": status}), flush=True)


if __name__ == "__main__":
    serve()
