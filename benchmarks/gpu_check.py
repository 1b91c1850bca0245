"""Every GPU claim of the README, checked in one command (at most 8 minutes on one GPU).

Each row is a measurement with its stated target and pass/fail:

1. AdamPower's one-pass kernel on CUDA (Triton): ``|g|^p`` against the float64
   formula over [1e-30, 1e4] (the accuracy contract, max relative error 2e-6;
   zeros, inf and NaN exact), and the optimizer step against
   ``AdamW(fused=True)`` at 45M and 200M parameters (target <= 1.05x).
2. MuonPower (its default, bf16 Newton-Schulz on CUDA) against torch's ``Muon``
   + ``AdamW(fused=True)`` on the same split (target <= 1.05x).
3. llama-0.2b training in bf16 autocast for 50 steps on the bundled corpus:
   tokens/s, MFU = 6 x parameters x tokens/s / the GPU's dense bf16 peak,
   the optimizer-state memory against the README's table (16 bytes per
   parameter, within 10%), the peak memory, and the loss falling.
4. The full training step with AdamPower against AdamW (target <= 1.01x).
5. ``torchrun --nproc_per_node=N`` (N = the visible GPUs) with DDP and FSDP2 over
   NCCL: 6 steps whose losses equal the single-process run's (relative 5e-3,
   bf16 autocast).
6. A ``gradpower compare`` micro-run on CUDA with ``--jobs`` N.

Without CUDA it prints "no CUDA device: nothing to check" and exits 0. It exits
1 when a check fails. Run from the repository root:

    python benchmarks/gpu_check.py [--repeats 10] [--out runs/gpu-check]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmarks, when imported by a test

#: Dense bf16 peak FLOP/s by a substring of ``torch.cuda.get_device_name()`` (vendor data sheets, SXM parts).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12, "L4": 121e12}
README_STATE_BYTES_PER_PARAM = 16  # "Scaling out": parameters 4 + gradients 4 + two moments 8


@dataclass
class Check:
    """One row of the table: what was measured, against which target, and whether it passed."""

    name: str
    measured: str
    target: str
    passed: bool | None  # None: measured, no target (information)


def table(checks: list[Check]) -> str:
    """The checks as a Markdown table, one row each."""
    rows = ["| check | measured | target | result |", "|---|---|---|---|"]
    for c in checks:
        result = "info" if c.passed is None else ("pass" if c.passed else "FAIL")
        rows.append(f"| {c.name} | {c.measured} | {c.target} | {result} |")
    return "\n".join(rows)


def ratio_check(name: str, value: float, base: float, target: float, unit: str = "ms",
                ratio: float | None = None) -> Check:
    """``value`` against ``base`` (times shown in ms); ``ratio``, when given, is the one measured round by round."""
    ratio = value / base if ratio is None else ratio
    return Check(name, f"{value * 1e3:.2f} {unit} vs {base * 1e3:.2f} {unit} = {ratio:.3f}x", f"<= {target}x",
                 ratio <= target)


def kernel_accuracy(device: torch.device) -> list[Check]:
    """The one-pass kernel's ``|g|^p`` against float64, compiled for the device as the optimizer compiles it."""
    from gradpower.optim.onepass import ACCURACY, power_abs, split_p

    checks = []
    x = torch.logspace(-30, 4, 1 << 22, dtype=torch.float64).float().to(device)
    specials = torch.tensor([0.0, math.inf, math.nan], device=device)
    power = torch.compile(power_abs, dynamic=False, fullgraph=True)
    for p in (0.6, 1.2, 2.0):
        scalars = [torch.tensor(v, dtype=torch.float32, device=device) for v in split_p(p)]
        got = power(x, *scalars).double()
        exact = x.double() ** p
        normal = (exact >= 2.0**-126) & (exact < 3e38)
        err = ((got - exact).abs() / exact)[normal].max().item()
        special = power(specials, *scalars)
        exact_special = bool(special[0] == 0 and special[1] == math.inf and torch.isnan(special[2]))
        checks.append(Check(f"1. one-pass |g|^p accuracy, p={p}", f"max rel. error {err:.2e}; 0/inf/NaN "
                            f"{'exact' if exact_special else 'WRONG'}", f"<= {ACCURACY:g} on [1e-30, 1e4]",
                            err <= ACCURACY and exact_special))
    return checks


def adampower_step(device: torch.device, repeats: int) -> list[Check]:
    from optimizer_step import ADAM_BASELINE, adam_results, llama_like_shapes

    checks = []
    for label, shapes in (("45M", llama_like_shapes()),
                          ("200M", llama_like_shapes(vocab=32000, dim=1024, ff=2736, layers=12))):
        results = adam_results(shapes, device, repeats, [ADAM_BASELINE, "AdamPower(default: one-pass)"])
        (base, _, _), (ours, first, ratio) = results.values()
        check = ratio_check(f"1. AdamPower one-pass step vs fused AdamW, {label} params", ours, base, 1.05,
                            ratio=ratio)
        check.measured += f" (first step {first:.1f} s)"
        checks.append(check)
    return checks


def muonpower_step(device: torch.device, repeats: int, preset_name: str) -> list[Check]:
    from optimizer_step import muon_results

    results = muon_results(preset_name, device, repeats)
    (base, _, _), default = next(iter(results.values())), next(n for n in results if n.startswith("MuonPower(default"))
    ours, _, ratio = results[default]
    return [ratio_check(f"2. {default} vs torch Muon + fused AdamW, {preset_name}", ours, base, 1.05, ratio=ratio)]


def training(device: torch.device, preset_name: str, batch_size: int, steps: int, out: Path) -> list[Check]:
    """``steps`` steps of the harness's own training on the bundled corpus, bf16 autocast."""
    from gradpower.models import build_model, preset
    from gradpower.train import train
    from gradpower.train.config import TrainConfig

    params = sum(t.numel() for t in build_model(preset(preset_name)).parameters())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    cfg = TrainConfig(preset=preset_name, steps=steps, batch_size=batch_size, device=str(device), log_every=1,
                      eval_every=steps, eval_tokens=65536, out=str(out / "train"), overwrite=True, optim="adampower")
    started = time.perf_counter()
    train(cfg)
    wall = time.perf_counter() - started
    rows = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    rates = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")][len(rows) // 5:]  # after the warm-up
    rate = sorted(rates)[len(rates) // 2] if rates else math.nan
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)
    mfu = 6 * params * rate / peak if peak else math.nan
    k = max(1, len(losses) // 5)
    first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
    checks = [
        Check(f"3. {preset_name} bf16 training, {steps} steps x {batch_size} seqs", f"{rate:,.0f} tokens/s "
              f"(median after warm-up; {wall:.0f} s with compile and evaluation)", "measured", None),
        Check("3. MFU = 6 x params x tokens/s / peak bf16", f"{mfu:.1%} of {peak / 1e12:.0f} TFLOP/s ({name})"
              if peak else f"peak of {name!r} unknown", "measured", None),
        Check("3. loss falls", f"first {k} steps {first:.3f} -> last {k} {last:.3f}", "last < first", last < first),
    ]
    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated(device) / 1e9
        state = state_bytes(preset_name, device) / 1e9
        table_gb = params * README_STATE_BYTES_PER_PARAM / 1e9
        checks += [
            Check("3. optimizer-state memory vs the README's 16 bytes/param", f"{state:.2f} GB vs {table_gb:.2f} GB",
                  "within 10%", abs(state / table_gb - 1) <= 0.10),
            Check("3. peak memory (activations included)", f"{peak_mem:.1f} GB", "measured", None),
        ]
    return checks


def state_bytes(preset_name: str, device: torch.device) -> int:
    """Bytes allocated by a model, its gradients and AdamPower's moments after one step (no activations)."""
    from gradpower import AdamPower
    from gradpower.models import build_model, preset

    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    model = build_model(preset(preset_name)).to(device)
    opt = AdamPower(model.parameters(), lr=1e-4)
    for t in model.parameters():
        t.grad = torch.zeros_like(t)
    opt.step()
    used = torch.cuda.memory_allocated(device) - before
    del model, opt
    torch.cuda.empty_cache()
    return used


def train_step_overhead(device: torch.device, preset_name: str, batch_size: int, repeats: int) -> list[Check]:
    from gradpower.models import build_model, preset
    from train_step import measure

    cfg = preset(preset_name)
    torch.manual_seed(0)
    state = build_model(cfg).state_dict()
    batch = torch.randint(0, cfg.vocab_size, (batch_size, cfg.max_seq_len), device=device)
    results = measure({"adamw": ("adamw", {}), "adampower": ("adampower", {})}, state, cfg, batch, device, repeats)
    base, ours = results["adamw"][0], results["adampower"][0]
    return [ratio_check(f"4. training step AdamPower vs AdamW, {preset_name}", ours, base, 1.01,
                        ratio=results["adampower"][2])]


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def torchrun_checks(device: torch.device, gpus: int, out: Path, timeout: float) -> list[Check]:
    """DDP and FSDP2 over ``gpus`` processes against one process, same global batch and seed."""
    argv = ["train", "--preset", "llama-tiny", "--steps", "6", "--batch-size", str(8 * gpus), "--log-every", "1",
            "--eval-every", "6", "--eval-tokens", "8192", "--device", device.type, "--overwrite"]
    single = subprocess.run([sys.executable, "-m", "gradpower", *argv, "--out", str(out / "single")],
                            capture_output=True, text=True, timeout=timeout)
    if single.returncode != 0:
        return [Check("5. torchrun single-process reference", single.stderr.strip().splitlines()[-1][:120],
                      "runs", False)]
    reference = _losses(out / "single")
    checks = []
    for parallel in ("ddp", "fsdp"):
        proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus),
                               "-m", "gradpower", *argv, "--parallel", parallel, "--out", str(out / parallel)],
                              capture_output=True, text=True, timeout=timeout)
        name = f"5. torchrun --nproc_per_node={gpus} --parallel {parallel} (NCCL) vs one process"
        if proc.returncode != 0:
            checks.append(Check(name, (proc.stderr.strip().splitlines() or ["failed"])[-1][:120], "runs", False))
            continue
        got = _losses(out / parallel)
        worst = max(abs(a - b) / abs(b) for a, b in zip(got, reference)) if len(got) == len(reference) else math.inf
        checks.append(Check(name, f"{len(got)} steps, max rel. loss difference {worst:.1e}", "<= 5e-3",
                            worst <= 5e-3))
    return checks


def compare_check(gpus: int, out: Path, timeout: float) -> list[Check]:
    argv = [sys.executable, "-m", "gradpower", "compare", "--steps", "5", "--seeds", "2", "--jobs", str(gpus),
            "--device", "cuda", "--set", "eval_tokens=8192", "--out", str(out / "compare")]
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - started
    ok = proc.returncode == 0 and (out / "compare" / "results.csv").exists()
    detail = f"exit {proc.returncode}, {wall:.0f} s" + ("" if ok else f": {proc.stderr.strip()[-120:]}")
    return [Check(f"6. gradpower compare micro-run on CUDA, --jobs {gpus}", detail, "exit 0 with results.csv", ok)]


def run_checks(steps: list[tuple[str, Callable[[], list[Check]]]], echo: Callable[[str], None] = print) -> list[Check]:
    """Run each named group of checks; one that raises becomes a failed row (the others still run)."""
    checks: list[Check] = []
    for name, step in steps:
        echo(f"-- {name}")
        started = time.perf_counter()
        try:
            checks += step()
        except Exception as exc:  # noqa: BLE001 - a crash is a failed check, reported in the table
            checks.append(Check(name, f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}", "runs", False))
        echo(f"   {time.perf_counter() - started:.0f} s")
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--preset", default="llama-0.2b", help="model of checks 2-4")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per step in checks 3-4")
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--out", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    device = torch.device("cuda")
    gpus = torch.cuda.device_count()
    out = args.out or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(f"{torch.cuda.get_device_name(device)} x {gpus}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
          f"runs in {out}")
    started = time.perf_counter()
    checks = run_checks([
        ("1. one-pass kernel accuracy", lambda: kernel_accuracy(device)),
        ("1. AdamPower step", lambda: adampower_step(device, args.repeats)),
        ("2. MuonPower step", lambda: muonpower_step(device, args.repeats, args.preset)),
        ("3. training", lambda: training(device, args.preset, args.batch_size, args.train_steps, out)),
        ("4. training step overhead", lambda: train_step_overhead(device, args.preset, args.batch_size,
                                                                  args.repeats)),
        ("5. torchrun DDP / FSDP2", lambda: torchrun_checks(device, gpus, out, timeout=150)),
        ("6. compare --jobs", lambda: compare_check(gpus, out, timeout=150)),
    ])
    print()
    print(table(checks))
    failed = [c for c in checks if c.passed is False]
    print(f"\n{len(checks) - len(failed)} of {len(checks)} rows pass or inform; {len(failed)} fail; "
          f"{time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
