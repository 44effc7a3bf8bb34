"""Tasks give the same results whichever executor runs them: in this process, on the local
process pool, on a Dask LocalCluster of two worker processes on loopback."""
import pytest

from emu.cli.sweep import sweep_task
from emu.run.executor import ExecutorError, LocalExecutor, make_executor

# speculation on, so that the seed changes the numbers (a task run with the wrong seed shows)
POINTS = [({"workload": w, "strategy": s, "pages": 8, "threads": t, "cpus": 2, "speculate": "default"}, seed, True)
          for w, t in (("touch", 1), ("threads", 2)) for s in ("reaper", "purge-naive") for seed in (0, 1)]


def _same(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "host_seconds"}      # host time is the only difference


@pytest.fixture(scope="module")
def serial():
    """The reference: each task in a fresh worker process, one after the other (fresh
    processes on both sides, so both run the code as it is on disk now)."""
    with make_executor("local", 2) as ex:
        rows = [_same(r) for r in ex.imap(sweep_task, POINTS, window=1)]
    assert rows[-2]["total"] != rows[-1]["total"]                    # seeds 0 and 1 differ
    return rows


def test_local_pool_and_in_process_equal_serial(serial):
    with make_executor("local", 2) as ex:
        assert [_same(r) for r in ex.imap(sweep_task, POINTS, window=3)] == serial
        got = dict(ex.as_completed(sweep_task, POINTS))
    assert [_same(got[i]) for i in range(len(POINTS))] == serial
    with LocalExecutor(1) as ex:                                     # jobs=1: in this process
        assert [_same(r) for r in ex.imap(sweep_task, POINTS[-2:])] == serial[-2:]


def test_dask_local_cluster_equals_serial(serial):
    pytest.importorskip("distributed", reason="dask.distributed not installed (pip install 'armmu[dask]')")
    with make_executor("dask", 2) as ex:
        assert ex.cluster is not None and len(ex.client.scheduler_info()["workers"]) == 2
        assert all(addr.startswith("tcp://127.0.0.1:") for addr in ex.client.scheduler_info()["workers"])
        got = dict(ex.as_completed(sweep_task, POINTS))
        ordered = list(ex.imap(sweep_task, POINTS[:3]))
    assert [_same(got[i]) for i in range(len(POINTS))] == serial
    assert [_same(r) for r in ordered] == serial[:3]


def test_executor_bad_input():
    with pytest.raises(ExecutorError, match="--jobs 0"):
        make_executor("local", 0)
    with pytest.raises(ExecutorError, match="needs --executor dask"):
        make_executor("local", 1, "tcp://127.0.0.1:1")
    with pytest.raises(ExecutorError, match="one of local, dask"):
        make_executor("ray")
