"""The cost input of the proxy rule (gradpower.models.proxy): training throughput of each candidate shape.

For every shape that fits the corpus (the rule's steps 1-3), trains AdamW steps of batch 8 x 128 on random tokens
(throughput does not depend on the text) on one thread, and prints tokens/s and the seconds of one run at 20 tokens
per parameter: the rule's MEASURED_TOKENS_PER_S. The last column, tokens/s x parameters against the smallest shape
measured in the same invocation, shows why the rule takes each shape's own speed: that product is far from constant
(a small model's step is bound by per-layer overheads as much as by its parameters).

    python benchmarks/proxy_cost.py [--steps 60] [--threads 1]

Measure with nothing else running: two torch processes on two cores slow each other down several-fold.
"""

from __future__ import annotations

import argparse
import time

import torch

from gradpower.models import build_model
from gradpower.models.proxy import CORPUS_TRAIN_TOKENS, Shape, candidates, fits_corpus

BATCH, SEQ = 8, 128


def tokens_per_s(shape: Shape, steps: int) -> float:
    torch.manual_seed(0)
    model = build_model(shape.config())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = torch.randint(0, shape.vocab, (steps + 10, BATCH, SEQ + 1))

    def step(batch: torch.Tensor) -> None:
        out = model(batch[:, :-1], labels=batch[:, 1:])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for i in range(10):  # warm-up
        step(data[i])
    start = time.perf_counter()
    for i in range(steps):
        step(data[10 + i])
    return steps * BATCH * SEQ / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shapes = sorted((s for s in candidates() if fits_corpus(s, CORPUS_TRAIN_TOKENS)), key=lambda s: s.params)
    print(f"threads={args.threads}, batch {BATCH} x {SEQ}, AdamW, {args.steps} timed steps per shape")
    print(f"{'shape (vocab, d_model, layers)':32} {'params':>8} {'tokens/s':>9} {'rate (tok/s x params)':>22} "
          f"{'run at 20 tok/param':>20} {'rate vs first':>14}")
    first = None
    for shape in shapes:
        speed = tokens_per_s(shape, args.steps)
        rate = speed * shape.params
        first = first or rate
        print(f"{str((shape.vocab, shape.d_model, shape.n_layers)):32} {shape.params:>8,} {speed:>9,.0f} "
              f"{rate:>22.3g} {shape.run_seconds(speed):>18.0f} s {rate / first:>13.2f}x")


if __name__ == "__main__":
    main()
