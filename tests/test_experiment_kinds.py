"""A kind of experiment is one module: a toy kind, registered here alone, runs end to end through the executors,
the pairing checks and ``gradpower report``; compare's analysis is a pure function of its record and runs."""

import csv
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gradpower.cli import main
from gradpower.experiments import (
    PlannedRun,
    RunsSpec,
    analyse_compare,
    load_run,
    register,
    registered,
    run_compare,
    run_experiment,
)
from gradpower.experiments.execute import place
from gradpower.experiments.folder import load_listed_runs
from gradpower.experiments.kinds import read_experiment
from gradpower.experiments.spec import CompareSpec, parse_arm

from .helpers import MICRO_EVAL_TOKENS


@pytest.fixture(scope="module")
def micro_base(tmp_path_factory):
    return {"preset": "llama-tiny", "steps": 4, "batch_size": 2, "seq_len": 16, "bpe_vocab_size": 300,
            "eval_batches": 1, "eval_every": 2, "eval_tokens": MICRO_EVAL_TOKENS, "device": "cpu",
            "cache_dir": str(tmp_path_factory.mktemp("cache"))}


@dataclass
class LrLineSpec(RunsSpec):
    """The toy kind's spec: the shared settings at each of a few learning rates."""

    lrs: list[float] = field(default_factory=list)


@dataclass
class LrLine:
    """The toy kind's result: the mean final val loss at each lr."""

    means: dict[float, float]


class LrLineExperiment:
    """A toy kind: one run per (seed, lr); its table is the mean final val loss per lr."""

    kind = "lr-line"
    spec_type = LrLineSpec

    def plan(self, spec, runs_root):
        return [PlannedRun(f"lr {lr:g}", seed, place(spec.config(seed, lr=lr), runs_root), point={"lr": lr})
                for seed in spec.seed_list for lr in spec.lrs]

    def planned_config(self, spec, entry):
        return spec.config(int(entry["seed"]), lr=entry["point"]["lr"])

    def analyse(self, folder):
        record = read_experiment(folder)
        finals = {}
        for entry, run in load_listed_runs(folder, record):
            finals.setdefault(entry["point"]["lr"], []).append(run.final_val_loss)
        return LrLine({lr: statistics.mean(values) for lr, values in finals.items()})

    def write(self, folder, result):
        with open(folder / "lr-line.csv", "w", newline="") as f:
            csv.writer(f).writerows([["lr", "mean_final_val_loss"], *sorted(result.means.items())])
        return "\n".join(f"lr {lr:g}: {mean:.4f}" for lr, mean in sorted(result.means.items()))


def test_a_kind_registered_in_one_module_runs_end_to_end_and_gradpower_report_rebuilds_it(tmp_path, micro_base,
                                                                                          capsys):
    toy = register(LrLineExperiment())
    assert registered("lr-line") is toy
    out = tmp_path / "line"
    spec = LrLineSpec(base=micro_base, seeds=2, lrs=[1e-3, 3e-3])
    text = run_experiment(toy, spec, out, jobs=1, command="toy")
    record = json.loads((out / "experiment.json").read_text())
    assert record["kind"] == "lr-line" and len(record["runs"]) == 4
    # the table is the runs' own numbers
    finals = {}
    for entry in record["runs"]:
        finals.setdefault(entry["point"]["lr"], []).append(load_run(out / entry["dir"]).final_val_loss)
    expected = {lr: statistics.mean(v) for lr, v in finals.items()}
    assert text == "\n".join(f"lr {lr:g}: {m:.4f}" for lr, m in sorted(expected.items()))
    table = (out / "lr-line.csv").read_text()
    (out / "lr-line.csv").unlink()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0  # found in the registry by the kind the folder records
    assert (out / "lr-line.csv").read_text() == table and text in capsys.readouterr().out
    # the pairing checks ask the kind what it planned: a run changed after it was planned is refused
    changed = out / record["runs"][0]["dir"] / "config.json"
    saved = json.loads(changed.read_text())
    saved["train"]["weight_decay"] = 0.5
    changed.write_text(json.dumps(saved))
    assert main(["report", str(out)]) == 2
    assert "is not the run the experiment planned (weight_decay: 0.1 -> 0.5)" in capsys.readouterr().err


def test_report_refuses_an_unknown_kind_and_an_option_of_another_kind(tmp_path, capsys):
    folder = tmp_path / "odd"
    folder.mkdir()
    (folder / "experiment.json").write_text(json.dumps({"kind": "nope", "spec": {}, "runs": []}))
    assert main(["report", str(folder)]) == 2
    assert "no kind of experiment named 'nope' is registered; known: " in capsys.readouterr().err
    (folder / "experiment.json").write_text(json.dumps({"kind": "sweep", "spec": {"grid": {"p": [1.0]}},
                                                        "runs": []}))
    assert main(["report", str(folder), "--baseline", "x"]) == 2
    assert "--baseline does not apply to" in capsys.readouterr().err


def test_compare_analysis_is_a_pure_function_of_the_record_and_the_runs(tmp_path, micro_base):
    spec = CompareSpec(base=micro_base, arms=[parse_arm("optim=adamw"), parse_arm("optim=adampower p=1.2")], seeds=2)
    out = tmp_path / "cmp"
    run_compare(spec, out, echo=lambda line: None)
    record = read_experiment(out)
    loaded = load_listed_runs(out, record)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    result = analyse_compare(record, loaded)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing written
    finals = {(e["arm"], e["seed"]): run.final_val_loss for e, run in loaded}
    diffs = [finals[("adampower p=1.2", s)] - finals[("adamw", s)] for s in (0, 1)]
    row = result.results_rows[1]
    assert row["arm"] == "adampower p=1.2" and row["diff_mean"] == pytest.approx(statistics.mean(diffs), abs=1e-12)
    assert result.baseline == "adamw" and result.ladder is None and len(result.verdicts) == 1
    assert analyse_compare(record, loaded, baseline="adampower p=1.2").results_rows[1]["arm"] == "adamw"


def test_planned_runs_carry_what_they_are(micro_base, tmp_path):
    from gradpower.experiments.compare import final_runs, tuning_runs

    spec = CompareSpec(base={**micro_base, "schedule": "wsd"}, arms=[parse_arm("optim=adamw")], seeds=2,
                       horizons=[8, 16], tune_lr=[1e-3, 2e-3])
    tuning = tuning_runs(spec, tmp_path)
    assert [(r.arm, r.seed, r.horizon, r.phase, r.cfg.lr) for r in tuning] == [
        ("adamw", 0, 16, "tune", 1e-3), ("adamw", 0, 16, "tune", 2e-3)]
    final = final_runs(spec, tmp_path, {"adamw": 2e-3})
    assert [(r.seed, r.horizon, r.phase, r.cfg.steps, r.cfg.lr) for r in final] == [
        (0, 8, "final", 8, 2e-3), (0, 16, "final", 16, 2e-3), (1, 8, "final", 8, 2e-3), (1, 16, "final", 16, 2e-3)]
    assert final[0].entry(tmp_path) == {"phase": "final", "arm": "adamw", "seed": 0, "lr": 2e-3,
                                        "dir": str(Path(final[0].run_dir).relative_to(tmp_path)), "horizon": 8}
