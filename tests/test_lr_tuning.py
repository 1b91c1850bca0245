"""lr tuning never chooses an lr whose runs diverged or failed; an arm with none left stops the comparison before
its seeds run, in one line naming the arm and its runs."""

import contextlib
import io
import math
from types import SimpleNamespace

import pytest

from gradpower.cli import main
from gradpower.experiments.lr_tuning import tuning_table

from .helpers import MICRO_EVAL_TOKENS


def tuned(arm: str, lr: float, loss: float | None) -> tuple[dict, SimpleNamespace | None]:
    """A hand-made tuning entry: a finished run with ``loss``, a diverged one (nan) or a failed one (None)."""
    run = None if loss is None else SimpleNamespace(final_val_loss=loss)
    return {"phase": "tune", "arm": arm, "lr": lr}, run


def test_a_diverged_or_failed_lr_is_never_chosen():
    loaded = [tuned("a", 1e-3, 5.0), tuned("a", 3e-3, math.nan), tuned("a", 6e-3, None),  # best finite: 1e-3
              tuned("b", 1e-3, None), tuned("b", 3e-3, math.nan), tuned("b", 6e-3, math.nan),  # nothing finite
              tuned("c", 1e-3, math.nan), tuned("c", 3e-3, 4.9), tuned("c", 6e-3, 4.8)]
    means, best = tuning_table(loaded)
    assert best == {"a": 1e-3, "c": 6e-3}  # b has no lr: it is not given the first-listed one
    assert means["b"] == {1e-3: math.inf, 3e-3: math.inf, 6e-3: math.inf}


def test_an_arm_whose_every_tuning_run_diverged_stops_the_comparison_before_its_seeds(tmp_path):
    out = tmp_path / "c"
    argv = ["compare", "--preset", "llama-tiny", "--steps", "6", "--batch-size", "2", "--device", "cpu",
            "--set", "seq_len=16", "--set", "bpe_vocab_size=300", "--set", "eval_batches=1",
            "--set", f"cache_dir={tmp_path / 'cache'}", "--set", f"eval_tokens={MICRO_EVAL_TOKENS}",
            "--arm", "optim=adamw", "--arm", "optim=adampower p=1.2", "--tune-lr", "1e5,1e6", "--seeds", "2",
            "--out", str(out)]
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    message = err.getvalue()
    assert code == 2 and message.count("\n") == 1
    assert "arm 'adamw' has no lr to run: every tuning run diverged or failed (lr 100000 diverged, lr 1e+06 " \
           "diverged)" in message
    # no seed beyond the tuning seed ran
    assert not [d for d in (out / "runs").iterdir() if d.name.endswith("-s1")]


@pytest.mark.parametrize("grid", [[1e-3], [1e-3, 2e-3]])
def test_the_tuning_table_marks_what_was_not_chosen(grid):
    loaded = [tuned("a", lr, math.nan) for lr in grid]
    _, best = tuning_table(loaded)
    assert best == {}
