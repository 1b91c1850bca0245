"""Compute-optimal proxies: the papers' regime scaled down to the bundled corpus and two CPU cores.

The papers' claims are about models trained on about 20 tokens per parameter, every parameter counted (Hoffmann et
al. 2022; Pearce & Song 2024), to the end of their schedule. A proxy keeps that ratio and shrinks the model until the
run fits the data and the time at hand. Its shape follows a rule written here and fixed before any proxy trained; the
rule reads the corpus (tokens per BPE vocab) and the cost (a measured throughput), never an effect:

1. The papers' proportions: a LLaMA with ``d_ff = 4 d_model``, head dimension 16 (``n_heads = d_model / 16``),
   at least 2 layers and at least 16 dims of width per layer (``d_model / n_layers >= 16``; the papers' presets
   have 48-107), untied embeddings (the input embedding and the output head are separate matrices).
2. A BPE vocab trained on the corpus (one of :data:`VOCABS`) that keeps the embedding share (input embedding plus
   head over all parameters) in :data:`EMBEDDING_SHARE`, around the papers' llama-66m (about half).
3. 20 tokens per parameter in at most :data:`MAX_PASSES` passes over the vocab's training split
   (Muennighoff et al. 2023: up to about 4 passes are nearly as good as unique data).
4. The largest such model (most parameters), within a cost cap where one is given: a run's seconds at 20 tokens per
   parameter at the shape's own measured throughput (:data:`MEASURED_TOKENS_PER_S`; a small model's step is bound by
   per-layer overheads as much as by its parameters, so no single rate would do). Ties go to the smaller vocab, then
   the wider model.

:func:`proxy_shapes` applies the rule to its inputs; the presets of :mod:`.presets` are its outputs for the
inputs recorded in :data:`CORPUS_TRAIN_TOKENS` and :data:`MEASURED_TOKENS_PER_S`, and the suite recomputes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import BadInput
from .config import LlamaConfig

#: Training tokens per parameter of the papers' runs (the Chinchilla ratio).
TOKENS_PER_PARAM = 20
#: Passes over the training split a proxy may make (Muennighoff et al. 2023).
MAX_PASSES = 4
#: The embedding share a proxy keeps (the papers' llama-66m: about 0.5).
EMBEDDING_SHARE = (0.4, 0.6)
HEAD_DIM = 16
FF_MULT = 4
MIN_LAYERS = 2
#: The BPE vocab sizes the rule may train on the corpus.
VOCABS = (512, 1024, 2048, 4096)
#: Widths and depths the rule considers.
WIDTHS = tuple(range(32, 513, HEAD_DIM))
DEPTHS = tuple(range(MIN_LAYERS, 13))
#: Rule 1's least width per layer.
WIDTH_PER_LAYER = 16

#: The bundled corpus's training-split tokens per BPE vocab (val_fraction 0.1), measured by building each vocab's
#: token shards (``gradpower.data.pipeline.prepare_data``; the suite checks the 1024 entry against the cache).
CORPUS_TRAIN_TOKENS = {512: 2_467_780, 1024: 2_000_427, 2048: 1_730_343, 4096: 1_537_461}


@dataclass(frozen=True)
class Shape:
    """One candidate proxy: vocab, width and depth; the rest follows from the rule's proportions."""

    vocab: int
    d_model: int
    n_layers: int
    seq_len: int = 128

    def config(self) -> LlamaConfig:
        return LlamaConfig(vocab_size=self.vocab, d_model=self.d_model, d_ff=FF_MULT * self.d_model,
                           n_heads=self.d_model // HEAD_DIM, n_layers=self.n_layers, max_seq_len=self.seq_len)

    @property
    def params(self) -> int:
        """Every parameter: untied input embedding and head (2 V d), per layer attention (4 d^2), SwiGLU MLP
        (3 d d_ff) and two RMSNorm weights (2 d), and the final norm (d)."""
        d, ff = self.d_model, FF_MULT * self.d_model
        return 2 * self.vocab * d + self.n_layers * (4 * d * d + 3 * d * ff + 2 * d) + d

    @property
    def embedding_share(self) -> float:
        return 2 * self.vocab * self.d_model / self.params

    def run_seconds(self, tokens_per_s: float) -> float:
        """Seconds of one run at 20 tokens per parameter at ``tokens_per_s``."""
        return TOKENS_PER_PARAM * self.params / tokens_per_s


def candidates() -> list[Shape]:
    """Rule 1: every shape of the papers' proportions the rule considers."""
    return [Shape(v, d, n) for v in VOCABS for d in WIDTHS for n in DEPTHS if d >= WIDTH_PER_LAYER * n]


def fits_corpus(shape: Shape, train_tokens: dict[int, int]) -> bool:
    """Rules 2 and 3: the embedding share, and 20 tokens per parameter within MAX_PASSES passes."""
    low, high = EMBEDDING_SHARE
    return (shape.vocab in train_tokens and low <= shape.embedding_share <= high
            and TOKENS_PER_PARAM * shape.params <= MAX_PASSES * train_tokens[shape.vocab])


def largest(train_tokens: dict[int, int], max_params: float = math.inf,
            max_seconds: float | None = None, speeds: dict[tuple[int, int, int], float] | None = None) -> Shape:
    """Rule 4: the largest shape that fits the corpus with at most ``max_params`` parameters and, given
    ``max_seconds``, whose run at 20 tokens per parameter takes at most that at its measured speed (``speeds``:
    tokens/s by (vocab, d_model, n_layers); an unmeasured shape is not chosen under a cost cap)."""
    def affordable(shape: Shape) -> bool:
        if max_seconds is None:
            return True
        speed = (speeds or {}).get((shape.vocab, shape.d_model, shape.n_layers))
        return speed is not None and shape.run_seconds(speed) <= max_seconds

    fitting = [s for s in candidates() if fits_corpus(s, train_tokens) and s.params <= max_params and affordable(s)]
    if not fitting:
        raise BadInput(f"no proxy shape fits {max_params:g} parameters, the cost cap and the corpus ({train_tokens})")
    return max(fitting, key=lambda s: (s.params, -s.vocab, s.d_model))


#: The rule's cost input: training tokens/s of every shape that fits the corpus, AdamW at batch 8 x 128 on one
#: thread of the 2-core machine this project is measured on (Intel Xeon with AVX-512, torch 2.13), nothing else
#: running: ``python benchmarks/proxy_cost.py --steps 60`` (docs/models.md shows its table).
MEASURED_TOKENS_PER_S = {(512, 32, 2): 72_031, (1024, 48, 2): 41_217, (1024, 48, 3): 30_290,
                         (1024, 64, 2): 32_067, (1024, 80, 2): 24_309}
#: The seconds one run of the default comparison may take: ``make demo``'s 15 minutes, less about 2 for the install,
#: over its 8 runs trained two at a time (``--jobs 2``, one thread each).
DEMO_RUN_SECONDS = (15 - 2) * 60 / 4


#: The claims' quick design in headline runs: the training tokens ``gradpower claims --budget quick --plan`` totals
#: (every claim at 3 seeds, lr grids and pilots included, wsd branches at the cost of their decay, a run two claims
#: share counted in each) over one headline run's tokens (20 tokens per parameter). The ladders, seeds and grids fix
#: it, not the model.
CLAIMS_QUICK_RUNS = 149
#: One claims run's cost cap: the quick design in a third of ``full``'s 120 minutes (so that ``full`` can add seeds
#: to about 10), two runs at a time.
CLAIMS_RUN_SECONDS = 120 / 3 * 60 * 2 / CLAIMS_QUICK_RUNS


def claims_proxy(train_tokens: dict[int, int] = CORPUS_TRAIN_TOKENS,
                 speeds: dict[tuple[int, int, int], float] = MEASURED_TOKENS_PER_S) -> Shape:
    """The claims' proxy: the rule's largest shape whose run at 20 tokens per parameter fits
    :data:`CLAIMS_RUN_SECONDS` (llama-pico)."""
    return largest(train_tokens, max_seconds=CLAIMS_RUN_SECONDS, speeds=speeds)


def proxy_shapes(train_tokens: dict[int, int] = CORPUS_TRAIN_TOKENS,
                 speeds: dict[tuple[int, int, int], float] = MEASURED_TOKENS_PER_S,
                 run_seconds: float = DEMO_RUN_SECONDS) -> dict[str, Shape]:
    """The proxies, by name: ``llama-nano`` (the largest within a run's cost cap: the default comparison's proxy),
    ``llama-micro`` (the largest the corpus allows) and ``llama-pico`` (the largest with at most a quarter of
    llama-micro's parameters; also :func:`claims_proxy`): three sizes over a 4x range for the effect against model
    size."""
    micro = largest(train_tokens)
    return {"llama-pico": largest(train_tokens, micro.params / 4),
            "llama-nano": largest(train_tokens, max_seconds=run_seconds, speeds=speeds),
            "llama-micro": micro}
