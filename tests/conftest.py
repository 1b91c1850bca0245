import pytest
import torch

from gradpower.experiments import execute


@pytest.fixture(autouse=True)
def _seed_and_threads(monkeypatch, request):
    """One thread and, for commands run without --jobs, one run at a time: the suite's two xdist workers already
    fill the two cores (the pool of processes is tested with an explicit --jobs, and the CPU default by the test
    marked ``default_jobs``)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if request.node.get_closest_marker("default_jobs") is None:
        monkeypatch.setattr(execute, "default_jobs", lambda: 1)
    yield


def pytest_configure(config):
    config.addinivalue_line("markers", "default_jobs: run commands with the CPU's default --jobs (not one at a time)")
