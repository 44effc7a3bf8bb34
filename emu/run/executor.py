"""Where sweep and check run their tasks: a local process pool (default) or Dask distributed.

A task is a module-level function and its arguments, a pure function of (configuration,
seed), so any executor gives the same results; only the order they finish in differs.
Two ways to get them back:

* ``imap(fn, argtuples)``: results in submission order, at most ``window`` tasks in
  flight (a consumer that stops early, like check at its first violation, wastes little);
* ``as_completed(fn, argtuples)``: (index, result) as each finishes (sweep: progress
  and resumable saves).

``make_executor("local", jobs)`` or ``make_executor("dask", jobs, scheduler="tcp://h:p")``
(no scheduler: a LocalCluster of ``jobs`` worker processes on this machine). Dask is an
optional extra (``pip install 'armmu[dask]'``); asking for it without it installed, or
naming a scheduler that cannot be reached, is an ExecutorError (one line, exit 2).
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

EXECUTORS = ("local", "dask")
CONNECT_TIMEOUT = "5s"


class ExecutorError(ValueError):
    """The executor cannot be used as asked (one line for the CLI)."""


class LocalExecutor:
    """concurrent.futures' process pool; jobs == 1 runs the tasks in this process."""

    name = "local"

    def __init__(self, jobs: int | None = None):
        self.jobs = jobs or os.cpu_count() or 1
        self.pool = ProcessPoolExecutor(max_workers=self.jobs) if self.jobs > 1 else None

    @property
    def workers(self) -> int:
        return self.jobs

    def _submit(self, fn, args):
        return self.pool.submit(fn, *args)

    def imap(self, fn, argtuples, window: int | None = None):
        if self.pool is None:
            for args in argtuples:
                yield fn(*args)
            return
        yield from self._windowed(fn, argtuples, window or 2 * self.jobs)

    def _windowed(self, fn, argtuples, window: int):
        """Results in submission order, submitting at most ``window`` tasks ahead."""
        inflight: deque = deque()
        try:
            for args in argtuples:
                inflight.append(self._submit(fn, args))
                if len(inflight) >= window:
                    yield self._result(inflight.popleft())
            while inflight:
                yield self._result(inflight.popleft())
        finally:
            for f in inflight:
                f.cancel()

    def as_completed(self, fn, argtuples):
        if self.pool is None:
            for i, args in enumerate(argtuples):
                yield i, fn(*args)
            return
        futs = {self._submit(fn, args): i for i, args in enumerate(argtuples)}
        try:
            pending = set(futs)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in sorted(done, key=futs.get):
                    yield futs[f], self._result(f)
        finally:
            for f in futs:
                f.cancel()

    def _result(self, fut):
        return fut.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DaskExecutor(LocalExecutor):
    """dask.distributed: a Client on a scheduler address, or on a LocalCluster of `jobs`
    single-threaded worker processes (the model holds the GIL; threads would not help)."""

    name = "dask"

    def __init__(self, jobs: int | None = None, scheduler: str | None = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ExecutorError("--executor dask needs dask.distributed: pip install 'armmu[dask]'") from None
        self.jobs = jobs or os.cpu_count() or 1
        self.pool = None
        self.cluster = None
        self.scheduler = scheduler
        if scheduler:
            if not scheduler.startswith(("tcp://", "tls://", "inproc://", "ws://", "wss://")):
                raise ExecutorError(f"--scheduler {scheduler}: want an address like tcp://HOST:PORT")
            try:
                self.client = Client(scheduler, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError) as e:
                raise ExecutorError(f"cannot reach the Dask scheduler at {scheduler}: "
                                    f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
            except ValueError as e:
                raise ExecutorError(f"--scheduler {scheduler}: {e}") from None
        else:
            self.cluster = LocalCluster(n_workers=self.jobs, threads_per_worker=1, processes=True,
                                        dashboard_address=None, host="127.0.0.1")
            self.client = Client(self.cluster)

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {})) or self.jobs

    def imap(self, fn, argtuples, window: int | None = None):
        yield from self._windowed(fn, argtuples, window or 2 * self.workers)

    def as_completed(self, fn, argtuples):
        from distributed import as_completed
        futs = [self._submit(fn, args) for args in argtuples]
        index = {f.key: i for i, f in enumerate(futs)}
        try:
            for f in as_completed(futs):
                yield index[f.key], self._result(f)
        finally:
            for f in futs:
                f.cancel()

    def _submit(self, fn, args):
        return self.client.submit(fn, *args, pure=False)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(kind: str = "local", jobs: int | None = None, scheduler: str | None = None):
    if jobs is not None and jobs < 1:
        raise ExecutorError(f"--jobs {jobs}: must be 1 or more")
    if kind == "local":
        if scheduler:
            raise ExecutorError("--scheduler needs --executor dask")
        return LocalExecutor(jobs)
    if kind == "dask":
        return DaskExecutor(jobs, scheduler)
    raise ExecutorError(f"--executor {kind}: one of {', '.join(EXECUTORS)}")
