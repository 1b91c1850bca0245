"""A full training step (forward, backward, clip, optimizer step) with AdamW, AdamPower and MuonPower, and the cost
of ``--p track`` (AdamPower with a :class:`gradpower.PowerController`).

The step is the harness's own :func:`gradpower.train.loop.train_step` (bf16
autocast on CUDA, as in training). Every optimizer trains the same model from
the same weights on the same batch in this one process, one step of each in turn per round; each is
printed as the median over rounds of its overhead over AdamW's step in the same round (the paper
reports +0.4% per step on GPU), for the whole training step and for the optimizer step alone. Defaults: llama-small
on CPU, llama-0.2b in bf16 autocast on CUDA.

``--p track`` costs, per step, the moving averages its controller updates (timed as a variant whose
controller never re-chooses p: its optimizer step's extra time over fixed-p AdamPower's, over the whole
training step) plus its prediction of p*, made once every ``--p-every`` steps (timed on its own, the median
of five, and spread over ``--track-every`` steps; default 100, the 10% of a 1,000-step run that
``--p-every`` defaults to).

    python benchmarks/train_step.py [--preset llama-small] [--batch-size 8] [--repeats 10] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gradpower import PowerController, build_optimizer
from gradpower.models import build_model, preset
from gradpower.train import Runtime
from gradpower.train.loop import train_step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(variants: dict[str, tuple[str, dict]], model_state: dict, cfg, batch: torch.Tensor,
            device: torch.device, repeats: int) -> dict[str, tuple[float, float, float, float]]:
    """Each optimizer's median (training step, optimizer step) seconds after two warm-up rounds, and the medians
    over rounds of both over the baseline's (the first variant's) in the same round.

    Every variant trains its own copy of the model from the same weights; each round runs one step of each in
    turn, so the machine's drift falls on all of them alike and cancels out of the ratios."""
    runtime = Runtime(device)
    aux_coef = float(getattr(cfg, "aux_loss_coef", 0.0))
    contenders = {}
    for label, (name, opt_kw) in variants.items():
        model = build_model(cfg).to(device)
        model.load_state_dict(model_state)
        contenders[label] = (model, build_optimizer(name, model.named_parameters(), lr=1e-3, **opt_kw))
    steps: dict[str, list[float]] = {label: [] for label in contenders}
    opts: dict[str, list[float]] = {label: [] for label in contenders}
    for i in range(repeats + 2):
        for label, (model, opt) in contenders.items():
            mid: list[float] = []

            def before_update(result, mid=mid) -> None:  # forward, backward and clip are done
                sync(device)
                mid.append(time.perf_counter())

            sync(device)
            start = time.perf_counter()
            train_step(model, opt, [batch], runtime, clip=1.0, aux_coef=aux_coef, before_update=before_update)
            sync(device)
            end = time.perf_counter()
            if i >= 2:
                steps[label].append(end - start)
                opts[label].append(end - mid[0])
    base = next(iter(contenders))

    def ratio(values: dict[str, list[float]], label: str) -> float:
        return statistics.median(v / b for v, b in zip(values[label], values[base]))

    return {label: (statistics.median(steps[label]), statistics.median(opts[label]), ratio(steps, label),
                    ratio(opts, label)) for label in contenders}


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default=None, help="default: llama-small on CPU, llama-0.2b on CUDA")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 8 on CPU, 32 on CUDA")
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--track-every", type=int, default=100, help="steps between the tracked p's updates")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = args.preset or ("llama-0.2b" if device.type == "cuda" else "llama-small")
    batch_size = args.batch_size or (32 if device.type == "cuda" else 8)
    overrides = {"max_seq_len": args.seq_len} if args.seq_len else {}
    cfg = preset(name, **overrides)
    torch.manual_seed(0)
    state = build_model(cfg).state_dict()
    batch = torch.randint(0, cfg.vocab_size, (batch_size, cfg.max_seq_len), device=device)
    variants = {
        "AdamW  [baseline]": ("adamw", {}),
        "AdamPower (default: one-pass)": ("adampower", {}),
        "AdamPower (fused, separate pass)": ("adampower", {"fused": True}),
        "MuonPower": ("muonpower", {}),
        "AdamPower, p tracked (averaging)": ("adampower", {"p": PowerController(every=10**9)}),
    }
    controller = variants["AdamPower, p tracked (averaging)"][1]["p"]
    print(f"device={device} preset={name} batch={batch_size}x{cfg.max_seq_len} threads={torch.get_num_threads()} "
          f"torch={torch.__version__} repeats={args.repeats}")
    results = measure(variants, state, cfg, batch, device, args.repeats)
    print("ms: median; vs AdamW: median over rounds of the step over AdamW's in the same round")
    print(f"{'optimizer':34s} {'train step':>12s} {'vs AdamW':>9s} {'opt step':>10s} {'vs AdamW':>9s}")
    for label, (step, opt, step_ratio, opt_ratio) in results.items():
        print(f"{label:34s} {step * 1e3:9.1f} ms {step_ratio - 1:+8.1%} {opt * 1e3:7.1f} ms {opt_ratio:8.2f}x")
    fixed = results["AdamPower (default: one-pass)"]
    tracked = results["AdamPower, p tracked (averaging)"]
    # the averaging runs inside the optimizer step: its extra optimizer-step time over the fixed-p training step
    # (a whole step's round-to-round noise is larger than the averaging itself)
    averaging = (tracked[1] - fixed[1]) / fixed[0]
    predict_s = []
    for _ in range(5):
        start = time.perf_counter()
        controller.predict()
        predict_s.append(time.perf_counter() - start)
    prediction = statistics.median(predict_s) / args.track_every / fixed[0]
    print(f"--p track over fixed-p AdamPower, per training step: averaging {averaging:+.2%}, prediction "
          f"{statistics.median(predict_s) * 1e3:.0f} ms every {args.track_every} steps = {prediction:+.2%}; "
          f"total {averaging + prediction:+.2%}")


if __name__ == "__main__":
    main()
