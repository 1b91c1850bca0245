"""The compute-optimal proxies: their shapes recomputed from the rule's inputs, the corpus input checked against the
token shards, and every run's passes over its data (epochs) with a warning past four."""

import contextlib
import io
import json
from pathlib import Path

import pytest

from gradpower.cli import main
from gradpower.data.corpus import shakespeare_text
from gradpower.data.pipeline import DataConfig, prepare_data
from gradpower.experiments.runs import load_run
from gradpower.models import PRESETS, count_params, preset
from gradpower.models.proxy import (
    CLAIMS_QUICK_RUNS,
    CORPUS_TRAIN_TOKENS,
    DEMO_RUN_SECONDS,
    EMBEDDING_SHARE,
    MAX_PASSES,
    MEASURED_TOKENS_PER_S,
    TOKENS_PER_PARAM,
    VOCABS,
    Shape,
    claims_proxy,
    proxy_shapes,
)


def params_by_hand(vocab: int, d: int, layers: int) -> int:
    """An untied LLaMA with d_ff = 4d: embeddings and head, per layer q/k/v/o + SwiGLU + two norms, final norm."""
    return 2 * vocab * d + layers * (4 * d * d + 3 * d * 4 * d + 2 * d) + d


def test_the_parameter_formula_counts_what_the_model_holds():
    for shape in (Shape(512, 32, 2), Shape(1024, 48, 3), Shape(4096, 96, 4)):
        assert shape.params == count_params(shape.config()).total == params_by_hand(
            shape.vocab, shape.d_model, shape.n_layers)


def test_the_presets_are_the_rules_choice_recomputed_from_its_inputs():
    # The rule, written out again: papers' proportions (d_ff 4d, head dim 16, >= 2 layers, >= 16 dims per layer),
    # embedding share in [0.4, 0.6], 20 tokens per parameter within 4 passes, the largest, within the cost cap
    # (a run at 20 tokens per parameter at the shape's measured tokens/s within the demo's seconds per run).
    fitting = []
    for vocab in VOCABS:
        for d in range(32, 513, 16):
            for layers in range(2, 13):
                n = params_by_hand(vocab, d, layers)
                share = 2 * vocab * d / n
                if d >= 16 * layers and 0.4 <= share <= 0.6 and 20 * n <= 4 * CORPUS_TRAIN_TOKENS[vocab]:
                    fitting.append((n, -vocab, d, vocab, layers))
    micro = max(fitting)
    speed = {(vocab, d, layers): MEASURED_TOKENS_PER_S.get((vocab, d, layers)) for _, _, d, vocab, layers in fitting}
    assert all(speed.values())  # every shape that fits the corpus was measured
    nano = max(f for f in fitting if 20 * f[0] / speed[(f[3], f[2], f[4])] <= DEMO_RUN_SECONDS)
    pico = max(f for f in fitting if f[0] <= micro[0] / 4)
    shapes = proxy_shapes()
    for name, (n, _, d, vocab, layers) in {"llama-micro": micro, "llama-nano": nano, "llama-pico": pico}.items():
        assert (shapes[name].vocab, shapes[name].d_model, shapes[name].n_layers) == (vocab, d, layers)
        cfg = preset(name)
        assert (cfg.vocab_size, cfg.d_model, cfg.d_ff, cfg.n_heads, cfg.n_layers) == (vocab, d, 4 * d, d // 16, layers)
        assert count_params(cfg).total == n
    assert micro[0] >= 4 * pico[0]  # the size axis spans at least 4x
    assert (TOKENS_PER_PARAM, MAX_PASSES, EMBEDDING_SHARE) == (20, 4, (0.4, 0.6))
    # the claims' proxy: the largest whose run fits the quick design (CLAIMS_QUICK_RUNS headline runs) in 40 minutes,
    # two at a time
    claims = max(f for f in fitting if 20 * f[0] / speed[(f[3], f[2], f[4])] <= 40 * 60 * 2 / CLAIMS_QUICK_RUNS)
    assert claims == pico
    assert (claims_proxy().vocab, claims_proxy().d_model, claims_proxy().n_layers) == (pico[3], pico[2], pico[4])
    for moe_name, dense_name in (("qwen2moe-nano", "llama-nano"), ("qwen2moe-pico", "llama-pico")):
        moe, dense = preset(moe_name), preset(dense_name)
        assert (moe.d_model, moe.n_layers, moe.vocab_size, moe.n_experts, moe.top_k) == (
            dense.d_model, dense.n_layers, dense.vocab_size, 8, 4)
    assert {"llama-pico", "llama-nano", "llama-micro", "qwen2moe-nano", "qwen2moe-pico"} <= set(PRESETS)


def test_the_corpus_input_is_what_the_token_shards_hold(tmp_path):
    prepare_data(DataConfig(bpe_vocab_size=1024, cache_dir=str(tmp_path)), 1024, 128)
    meta = json.loads((tmp_path / "shards-bpe1024" / "meta.json").read_text())
    assert meta["tokens"]["train"] == CORPUS_TRAIN_TOKENS[1024]


def run_main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("steps, warned", [(4, False), (120, True)])
def test_epochs_are_training_tokens_over_the_split_and_past_four_passes_warn(tmp_path, steps, warned):
    corpus = tmp_path / "small.txt"
    corpus.write_text(shakespeare_text()[:30_000])  # about 12,800 training tokens at vocab 300
    out = tmp_path / "run"
    code, printed, err = run_main(["train", "--preset", "llama-tiny", "--batch-size", "16", "--seq-len", "32",
                                   "--bpe-vocab-size", "300", "--data", str(corpus), "--cache-dir", str(tmp_path / "c"),
                                   "--eval-tokens", "128", "--eval-batches", "1", "--val-fraction", "0.3",
                                   "--eval-every", "0", "--steps", str(steps), "--out", str(out)])
    assert code == 0
    split = json.loads((tmp_path / "c" / "shards-bpe300" / "meta.json").read_text())["tokens"]["train"]
    run = load_run(out)
    assert run.resolved["train_split_tokens"] == split
    assert run.epochs == pytest.approx(steps * 16 * 32 / split)
    assert ("more than 4, past which repeated data is no longer nearly as good as new" in err) == warned
    if warned:
        assert f"passes {steps * 16 * 32 / split:.1f} times over its training split ({split:,} tokens of" in err


def test_compare_reports_epochs_in_runs_csv_and_the_verdict(tmp_path):
    out = tmp_path / "c"
    code, printed, _ = run_main(["compare", "--preset", "llama-tiny", "--steps", "4", "--batch-size", "2",
                                 "--set", "seq_len=16", "--set", "bpe_vocab_size=300", "--set", "eval_batches=1",
                                 "--set", f"cache_dir={tmp_path / 'cache'}", "--set", "eval_tokens=512",
                                 "--seeds", "2", "--out", str(out)])
    assert code == 0
    split = json.loads((tmp_path / "cache" / "shards-bpe300" / "meta.json").read_text())["tokens"]["train"]
    import csv

    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert all(float(r["epochs"]) == pytest.approx(int(r["tokens"]) / split, rel=1e-5) for r in rows)
    assert f", {4 * 2 * 16 / split:.2g} epochs" in printed and f"{4 * 2 * 16 / split:.2g} epochs" in Path(
        out / "report.md").read_text()
