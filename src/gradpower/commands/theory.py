"""``gradpower theory``: its flags (:func:`add_arguments`) and what it does (:func:`run`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def parser_options() -> dict[str, Any]:
    """The subparser's ``help`` and ``description``."""
    return dict(help="the toy model of AdamPower's update, or AdagradPower on a noisy problem",
        description="'gradpower theory' (or 'theory adam'): AdamPower's update on g = mu + sigma*xi, "
        "xi ~ U[-1, 1], simulated and in closed form, with the optimal p per noise level. "
        "'gradpower theory adagrad': AdagradPower vs Adagrad on a noisy non-convex problem.",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("which", nargs="?", choices=("adam", "adagrad"), default="adam")
    parser.add_argument("--mu", type=float, default=1e-6, help="mean gradient (default 1e-6)")
    parser.add_argument("--eps", type=float, default=1e-8, help="Adam eps (default 1e-8)")
    parser.add_argument("--beta1", type=float, default=0.9)
    parser.add_argument("--beta2", type=float, default=0.95)
    parser.add_argument("--ratios", default="0.5,2,5,10,50", help="sigma/mu values (default 0.5,2,5,10,50)")
    parser.add_argument("--p-grid", default="0.5:2.5:0.05", metavar="START:STOP:STEP or P1,P2,...",
                        help="exponents (at most 0.05 apart; default 0.5:2.5:0.05); for 'adagrad' a list")
    parser.add_argument("--steps", type=int, default=None, help="simulation steps (adam 20000, adagrad 500)")
    parser.add_argument("--seeds", type=int, default=3, help="adagrad: seeds per p (default 3)")
    parser.add_argument("--out", default="runs/theory", help="output folder (default runs/theory)")


def run(args: argparse.Namespace, command: str) -> int:
    from ..experiments.spec import parse_numbers
    from ..theory import run_adagrad_comparison, run_toy
    from ..theory.run import p_grid

    out = Path(args.out)
    if args.which == "adagrad":
        ps = parse_numbers(args.p_grid, "--p-grid") if "," in args.p_grid else [0.8, 1.0, 1.2, 1.5]
        text = run_adagrad_comparison(out, tuple(ps), seeds=args.seeds, steps=args.steps or 500)
        print(f"{text}\n\nwritten to {out}: adagrad.csv, adagrad.png")
        return 0
    if ":" in args.p_grid:
        start, stop, step = (float(v) for v in args.p_grid.split(":"))
        ps = p_grid(start, stop, step)
    else:
        ps = sorted(parse_numbers(args.p_grid, "--p-grid"))
    text = run_toy(out, args.mu, args.eps, args.beta1, args.beta2, tuple(parse_numbers(args.ratios, "--ratios")), ps,
                   steps=args.steps or 20000)
    print(f"AdamPower update in the toy model (mu={args.mu:g}, eps={args.eps:g}):\n{text}\n\n"
          f"written to {out}: theory.csv, optimal_p.csv, theory.png")
    return 0
