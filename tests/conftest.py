import pytest
import torch

from gradpower.experiments import execute

_CPU_DEFAULT_JOBS = execute.default_jobs


@pytest.fixture(scope="session", autouse=True)
def _one_run_at_a_time():
    """Commands run without --jobs train one run at a time in the test's process: the suite's two xdist workers
    already fill the two cores. Session-wide, so module- and session-scoped fixtures get it too; the pool of
    processes is tested with an explicit --jobs, and the CPU default by tests marked ``default_jobs``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(execute, "default_jobs", lambda: 1)
        yield


@pytest.fixture(autouse=True)
def _seed_and_threads(monkeypatch, request):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if request.node.get_closest_marker("default_jobs") is not None:
        monkeypatch.setattr(execute, "default_jobs", _CPU_DEFAULT_JOBS)
    yield


def pytest_configure(config):
    config.addinivalue_line("markers", "default_jobs: run commands with the CPU's default --jobs (not one at a time)")
