"""benchmarks/gpu_check.py off CUDA: the no-device path, and its table and failure handling on hand-made rows."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has CUDA: the script would check it")
def test_without_cuda_it_says_so_and_exits_0():
    proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "no CUDA device: nothing to check"


def test_the_table_marks_each_row_and_a_crashing_check_fails_without_stopping_the_others(gpu_check):
    def crash():
        raise RuntimeError("NCCL error: unhandled system error\nmore")

    checks = gpu_check.run_checks([
        ("speed", lambda: [gpu_check.ratio_check("step", 0.0102, 0.0100, 1.05),
                           gpu_check.ratio_check("slow step", 0.0120, 0.0100, 1.05)]),
        ("torchrun", crash),
        ("info", lambda: [gpu_check.Check("tokens/s", "123", "measured", None)]),
    ], echo=lambda line: None)
    assert [c.passed for c in checks] == [True, False, False, None]
    assert checks[0].measured == "10.20 ms vs 10.00 ms = 1.020x" and checks[1].target == "<= 1.05x"
    assert checks[2].measured == "RuntimeError: NCCL error: unhandled system error"
    lines = gpu_check.table(checks).splitlines()
    assert lines[0] == "| check | measured | target | result |" and len(lines) == 6
    assert [line.rsplit("|", 2)[1].strip() for line in lines[2:]] == ["pass", "FAIL", "FAIL", "info"]
