"""The one driving loop over the executor interface: at most ``slots`` jobs at once, each run reported as its job
ends, and every implementation offering the interface."""

import contextlib
from types import SimpleNamespace

import pytest

from gradpower.experiments.executors import PoolExecutor, SerialExecutor, drive


class Recorder:
    """An executor whose jobs end in the order ``finish_order`` names, two at a time."""

    slots = 2
    shares_trunks = True

    def __init__(self):
        self.running, self.most, self.batches, self.closed = set(), 0, 0, None

    def accepting(self):
        return True

    @contextlib.contextmanager
    def batch(self):
        self.batches += 1
        yield

    def submit(self, job):
        trunk, branches = job
        handle = SimpleNamespace(name=trunk.label, runs=1 + len(branches), polls=0)
        self.running.add(handle.name)
        self.most = max(self.most, len(self.running))
        return handle

    def done(self, handle):
        return handle.polls >= 1 and handle.name == sorted(self.running)[-1]  # the last-named of those running

    def result(self, handle):
        self.running.discard(handle.name)
        return [("done", f"{handle.name} #{i}", 1.0) for i in range(handle.runs)]

    def wait(self, handles):
        for handle in handles:
            handle.polls += 1

    def close(self, completed):
        self.closed = completed


def run(label):
    return SimpleNamespace(label=label)


def test_drive_keeps_to_the_slots_and_reports_each_run_as_its_job_ends():
    executor, seen = Recorder(), []
    work = [(run("a"), []), (run("b"), [(run("b-branch"), 4)]), (run("c"), [])]
    drive(executor, work, lambda r, status, message, seconds: seen.append((r.label, message)))
    assert executor.most == 2 and executor.closed is True
    assert seen == [("b-branch", "b #0"), ("b", "b #1"), ("c", "c #0"), ("a", "a #0")]


def test_drive_closes_the_executor_when_a_job_raises():
    executor = Recorder()
    executor.result = lambda handle: (_ for _ in ()).throw(RuntimeError("boom"))
    with pytest.raises(RuntimeError, match="boom"):
        drive(executor, [(run("a"), [])], lambda *args: None)
    assert executor.closed is False


@pytest.mark.parametrize("cls", [SerialExecutor, PoolExecutor, "slurm"])
def test_every_executor_offers_the_interface(cls):
    if cls == "slurm":
        cls = pytest.importorskip("gradpower.experiments.slurm").SubmititExecutor
    for name in ("batch", "accepting", "submit", "done", "result", "wait", "close"):
        assert callable(getattr(cls, name)), name
    assert isinstance(cls.shares_trunks, bool)
