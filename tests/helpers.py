"""Small models and reference loops shared by the optimizer tests."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn


def break_for_resume(runs: Path) -> None:
    """Make every run under ``runs`` (trained with ``ckpt_every=2``, ``keep_ckpts`` >= 2 and 4 steps) one that
    fails only when it is resumed: back to step 2, whose checkpoint is damaged (what no start-up check sees)."""
    for run in runs.iterdir():
        metrics = run / "metrics.jsonl"
        metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:2]))
        for checkpoint in (run / "checkpoints").iterdir():
            if checkpoint.name.startswith("step_00000004"):
                checkpoint.unlink()
            else:
                checkpoint.write_bytes(b"damaged")


#: Held-out tokens of the final evaluation in the suite's micro runs (the default 65,536 would dominate their time).
MICRO_EVAL_TOKENS = 2048


class TinyNet(nn.Module):
    """A few HF-LLaMA-named parameters of every kind: embedding, 2-D hidden, norm, bias, head."""

    def __init__(self, vocab: int = 11, dim: int = 8) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, dim)
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.up_proj = nn.Linear(dim, 2 * dim, bias=True)
        self.norm = nn.LayerNorm(2 * dim)
        self.lm_head = nn.Linear(2 * dim, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed_tokens(ids)
        h = torch.tanh(self.q_proj(h))
        h = self.norm(torch.relu(self.up_proj(h)))
        return self.lm_head(h)


def batches(n: int, vocab: int = 11, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randint(0, vocab, (4, 6), generator=gen), torch.randint(0, vocab, (4, 6), generator=gen))
        for _ in range(n)
    ]


def loss_of(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    logits = model(x)
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def reference_phi(g: torch.Tensor, p: float) -> torch.Tensor:
    """Independent float64 formula for the transform."""
    x = g.double()
    return (torch.sign(x) * torch.abs(x) ** p).to(g.dtype)


def run_reference(model: nn.Module, opt: torch.optim.Optimizer, data, p_of, scheduler=None) -> None:
    """Hand-written loop: transform every grad with the float64 formula, then torch's step."""
    for batch in data:
        opt.zero_grad()
        loss_of(model, batch).backward()
        with torch.no_grad():
            for group in opt.param_groups:
                for prm in group["params"]:
                    if prm.grad is not None:
                        prm.grad.copy_(reference_phi(prm.grad, p_of(group)))
        opt.step()
        if scheduler is not None:
            scheduler.step()


def twin(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def assert_params_close(a: nn.Module, b: nn.Module, rtol: float = 1e-6, atol: float = 1e-7) -> None:
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pa, pb, rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
