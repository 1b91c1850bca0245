"""What MuonPower's default Newton-Schulz dtype is chosen from on this CPU: the measurement itself
(``gradpower.optim.newton_schulz.measure``: the fastest of 5 batched orthogonalisations after a warm-up) at each thread
count and a few matrix sizes, bf16 against fp32 in the same process, and the choice it gives.

    python benchmarks/ns_dtype.py [--threads 1,2]

The default shape (the first row of each thread count) is the one the library measures.
"""

from __future__ import annotations

import argparse

import torch

from gradpower.optim.newton_schulz import MEASURE_SHAPE, cpu_has_bf16_matmul, machine_key, measure

SHAPES = [MEASURE_SHAPE, (4, 128, 512), (2, 512, 2048)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="torch thread counts, comma-separated")
    args = parser.parse_args()
    print(f"native bf16 matrix instructions reported: {cpu_has_bf16_matmul()}")
    print("| threads | shape | bf16 ms | fp32 ms | bf16 / fp32 | faster |")
    print("|---|---|---|---|---|---|")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for shape in SHAPES:
            ms = measure(shape)
            faster = min(ms, key=ms.__getitem__)
            print(f"| {threads} | {' x '.join(map(str, shape))} | {ms['bfloat16']:.1f} | {ms['float32']:.1f} | "
                  f"{ms['bfloat16'] / ms['float32']:.2f}x | {faster} |")
    print(f"cache key of this machine at the last thread count: {machine_key(torch.get_num_threads())}")


if __name__ == "__main__":
    main()
