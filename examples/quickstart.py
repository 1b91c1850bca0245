"""Adam vs AdamPower in a plain PyTorch loop: the one-line change.

A small character-level model (8 characters of context -> next character) on
the bundled Shakespeare corpus, trained twice from the same seed with the same
hyper-parameters; only the optimizer class differs. Prints the held-out loss
of both. Runs in about a minute on a laptop CPU.

    python examples/quickstart.py [--steps 600]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import gradpower
from gradpower.data.corpus import shakespeare_text

CONTEXT = 8


def make_model(vocab: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Embedding(vocab, 64), nn.Flatten(), nn.Linear(64 * CONTEXT, 512), nn.GELU(),
        nn.Linear(512, 512), nn.GELU(), nn.Linear(512, vocab),
    )


def windows(data: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + torch.arange(CONTEXT + 1)
    chunk = data[idx]
    return chunk[:, :-1], chunk[:, -1]


def train(opt_name: str, data: torch.Tensor, val: torch.Tensor, vocab: int, steps: int) -> float:
    model = make_model(vocab)
    kw = dict(lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
    # The one-line change: AdamW -> AdamPower (p = 1.2), everything else unchanged.
    opt = (
        torch.optim.AdamW(model.parameters(), **kw)
        if opt_name == "AdamW"
        else gradpower.AdamPower(model.parameters(), p=1.2, **kw)
    )
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        x, y = windows(data, torch.randint(0, len(data) - CONTEXT - 1, (64,), generator=gen))
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # clip the raw gradient first
        opt.step()  # AdamPower: phi_p(grad), then the AdamW update
        if step % 200 == 0:
            print(f"  {opt_name:9s} step {step:4d}  train loss {loss.item():.3f}", flush=True)
    with torch.no_grad():
        x, y = windows(val, torch.arange(0, len(val) - CONTEXT - 1, 7))
        return nn.functional.cross_entropy(model(x), y).item()


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    text = shakespeare_text()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text[:400_000]], dtype=torch.long)
    data, val = ids[:350_000], ids[350_000:]
    results = {name: train(name, data, val, len(chars), args.steps) for name in ("AdamW", "AdamPower")}
    for name, loss in results.items():
        print(f"{name:9s} held-out loss {loss:.4f}")
    diff = results["AdamPower"] - results["AdamW"]
    print(f"AdamPower - AdamW: {diff:+.4f} (one seed: a single run is no evidence either way)")


if __name__ == "__main__":
    main()
