"""Call a function in a child process with a hard time and memory bound, from any thread.

math-verify bounds its work with ``signal.alarm``, which works only on a process's main thread (not in
Ray actor threads or evaluation threads) and cannot interrupt a C-level big-integer power such as
``10^{10^{10}}`` anyway. So the math verifier runs in a child process (``python -m arbor.reward.bounded
MODULE``): each call is one JSON line on the child's stdin, answered by one JSON line on its stdout. A call
that overruns is abandoned by killing the child, which the next call restarts; the child also caps its
address space, so a memory bomb fails inside it instead of taking the caller down.
"""

from __future__ import annotations

import atexit
import importlib
import json
import select
import subprocess
import sys
import threading
import time
from typing import Any

READY = "ready"


class CallTimeout(Exception):
    """The call overran its time bound; the child was killed."""


class WorkerFailed(Exception):
    """The child died, or the function raised (the message carries the child's error)."""


class BoundedWorker:
    """Runs ``MODULE.FUNCTION(*args)`` (JSON-serialisable in and out) in a child process, one call at a time."""

    def __init__(self, module: str, memory_mb: int = 2048, start_timeout_s: float = 120.0) -> None:
        self.module = module
        self.memory_mb = memory_mb
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()  # one request in flight per child: lines must pair up
        self.starts = 0  # children started: more than one means calls timed out or killed a child
        atexit.register(self.close)

    def _start(self) -> subprocess.Popen:
        # The child is this interpreter, so it imports the same installed ``arbor`` as the caller.
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__, self.module, str(self.memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        if self._read_line(proc, self.start_timeout_s) != READY:
            self._kill(proc)
            raise WorkerFailed(f"the {self.module} worker did not start")
        self.starts += 1
        return proc

    @staticmethod
    def _read_line(proc: subprocess.Popen, timeout_s: float) -> str | None:
        """One line from the child within ``timeout_s``; None on timeout or end of file."""
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], max(timeout_s, 0.0))
        if not ready:
            return None
        line = proc.stdout.readline()
        return line.decode().rstrip("\n") if line else None

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        proc.kill()
        proc.wait()

    def call(self, function: str, *args: Any, timeout_s: float) -> Any:
        """``function(*args)`` in the child; raises CallTimeout after ``timeout_s``, WorkerFailed on error."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = self._start()
            proc = self._proc
            assert proc.stdin is not None
            t0 = time.monotonic()
            try:
                proc.stdin.write((json.dumps({"fn": function, "args": list(args)}) + "\n").encode())
                proc.stdin.flush()
            except BrokenPipeError:
                self._proc = None
                raise WorkerFailed("the worker died before the call") from None
            line = self._read_line(proc, timeout_s)
            if line is None:
                self._kill(proc)
                self._proc = None
                if time.monotonic() - t0 >= timeout_s:
                    raise CallTimeout(f"{function} took longer than {timeout_s:g} s")
                raise WorkerFailed(f"the worker died during {function} (out of memory?)")
        reply = json.loads(line)
        if not reply["ok"]:
            raise WorkerFailed(reply["error"])
        return reply["result"]

    def close(self) -> None:
        """Stop the child (it also exits by itself when our end of its stdin closes)."""
        if self._proc is not None and self._proc.poll() is None:
            self._kill(self._proc)
        self._proc = None


def _serve(module: str, memory_mb: int) -> None:
    """The child's loop: one JSON request per stdin line, one JSON reply per stdout line."""
    import resource

    limit = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    target = importlib.import_module(module)
    out = sys.stdout
    out.write(READY + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"ok": True, "result": getattr(target, request["fn"])(*request["args"])}
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the caller as a reason
            reply = {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
