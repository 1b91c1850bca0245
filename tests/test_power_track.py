"""``--p track`` and :class:`gradpower.optim.PowerController`: the rule against a hand computation, the updates an
optimizer takes, the metrics record, and a resumed run that equals an uninterrupted one."""

import copy
import dataclasses
import json
import pickle

import pytest
import torch

from gradpower import AdagradPower, AdamPower, GradPower, MuonPower, PowerController
from gradpower.cli import main
from gradpower.experiments import parse_arm
from gradpower.train import TrainConfig, train
from gradpower.train.config import run_name
from gradpower.transform import sign_power

from .helpers import MICRO_EVAL_TOKENS


def hand_rule(p_stars, start=1.0, lo=0.5, hi=2.0, step=0.1, smoothing=0.5):
    """The documented rule, written out: smooth, bound, limit the change."""
    p, smoothed, out = start, start, []
    for estimate in p_stars:
        smoothed = (1 - smoothing) * smoothed + smoothing * estimate
        target = lo if smoothed < lo else hi if smoothed > hi else smoothed
        change = target - p
        p += step if change > step else -step if change < -step else change
        out.append(p)
    return out


@pytest.mark.parametrize("settings", [{}, {"start": 1.2, "p_min": 0.8, "p_max": 1.4, "max_change": 0.25,
                                           "smoothing": 1.0}])
def test_the_rule_smooths_bounds_and_limits_each_change_as_a_hand_computation(settings):
    # a scripted noise sequence: p* far above the bound, a sudden drop, then an outlier
    scripted = [2.5, 2.5, 2.5, 0.3, 0.3, 1.0, 1.05, 2.4, 1.0, 1.0, 1.0, 1.0]
    controller = PowerController(every=1, **settings)
    got = [controller.next_p(p) for p in scripted]
    rename = {"start": "start", "p_min": "lo", "p_max": "hi", "max_change": "step", "smoothing": "smoothing"}
    want = hand_rule(scripted, **{rename[k]: v for k, v in settings.items()})
    assert got == pytest.approx(want, abs=1e-9)
    lo, hi = settings.get("p_min", 0.5), settings.get("p_max", 2.0)
    assert all(lo - 1e-12 <= p <= hi + 1e-12 for p in got)
    steps = [b - a for a, b in zip([settings.get("start", 1.0), *got], got)]
    assert max(abs(s) for s in steps) <= settings.get("max_change", 0.1) + 1e-12


def scripted_p_star(monkeypatch, values):
    """Make the prediction return ``values`` in turn (the measurement itself still runs)."""
    import gradpower.diagnostics.predict as predict

    real, queue = predict.choose_p, list(values)
    monkeypatch.setattr(predict, "choose_p", lambda meas, b, eps, noise: (queue.pop(0), real(meas, b, eps, noise)[1]))


def test_an_optimizer_steps_with_the_p_the_controller_chose_from_the_step_it_chose_it(monkeypatch):
    """GradPower(SGD) with a controller against a hand-written SGD loop on sign(g)|g|^p with the hand rule's p."""
    scripted_p_star(monkeypatch, [2.0, 2.0, 0.5])
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(40, 30))
    reference = weight.detach().clone()
    controller = PowerController(every=2)
    opt = GradPower(torch.optim.SGD([weight], lr=0.05), p=controller)
    ps = hand_rule([2.0, 2.0, 0.5])  # chosen at steps 2, 4, 6
    in_force = [1.0, ps[0], ps[0], ps[1], ps[1], ps[2], ps[2]]
    updates = []
    for step in range(7):
        grad = torch.randn(40, 30) * 0.1
        weight.grad = grad.clone()
        opt.step()
        reference -= 0.05 * sign_power(grad, in_force[step])
        assert opt.param_groups[0]["p"] == pytest.approx(in_force[step])
        torch.testing.assert_close(weight.detach(), reference, rtol=0, atol=1e-6)
        update = controller.take_update()
        updates.append(update and (update["step"], update["p_track"], update["p_star"]))
    assert updates == [None, (2, pytest.approx(ps[0]), 2.0), None, (4, pytest.approx(ps[1]), 2.0), None,
                       (6, pytest.approx(ps[2]), 0.5), None]
    assert controller.take_update() is None  # each update is returned once


@pytest.mark.parametrize("make", [
    lambda params, c: AdamPower(params, p=c),
    lambda params, c: AdagradPower(params, p=c),
    lambda params, c: MuonPower(params, p=c, muon_params=lambda name, t: t.ndim == 2),
    lambda params, c: GradPower(torch.optim.SGD(params, lr=0.1), p=c),
], ids=["adampower", "adagradpower", "muonpower", "gradpower-sgd"])
def test_every_power_optimizer_takes_a_controller_and_keeps_it_through_copies(make, request):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4))
    controller = PowerController(every=3)
    named = request.node.callspec.id == "muonpower"
    opt = make(list(model.named_parameters()) if named else model.parameters(), controller)
    for _ in range(6):
        model.zero_grad()
        model(torch.randn(32, 16)).square().mean().backward()
        opt.step()
    assert controller.steps == 6 and controller.p != 1.0
    assert all(group["p"] == controller.p for group in opt.param_groups)
    for twin in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        held = twin.p if isinstance(twin, GradPower) else twin.power_controller
        assert isinstance(held, PowerController) and held.p == controller.p and held.steps == 6


def test_bad_controller_settings_are_refused_in_one_line():
    for kwargs, message in (({"every": 0}, "every must be"), ({"every": 2, "p_min": 1.5}, "p_min <= start"),
                            ({"every": 2, "max_change": 0}, "max_change"), ({"every": 2, "smoothing": 0}, "smoothing"),
                            ({"every": 2, "noise": "cauchy"}, "gaussian or uniform")):
        with pytest.raises(ValueError, match=message):
            PowerController(**kwargs)


def tiny(tmp_path, **kw):
    base = dict(preset="llama-tiny", seq_len=16, batch_size=4, steps=12, eval_every=6, eval_batches=1, log_every=1,
                bpe_vocab_size=300, cache_dir=str(tmp_path / "cache"), out=str(tmp_path / "run"), device="cpu",
                eval_tokens=MICRO_EVAL_TOKENS, p="track", p_every=3, ckpt_every=2)
    return TrainConfig(**{**base, **kw})


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_p_track_logs_each_update_and_a_resumed_run_follows_the_same_p_sequence(tmp_path, capsys):
    cfg = tiny(tmp_path)
    straight = records(train(dataclasses.replace(cfg, out=str(tmp_path / "straight"))).run_dir)
    updates = [r for r in straight if "p_track" in r]
    assert [r["step"] for r in updates] == [3, 6, 9, 12]
    for before, record in zip([1.0] + [r["p_track"] for r in updates], updates):
        assert record["p_before"] == before and abs(record["p_track"] - before) <= 0.1 + 1e-12
        assert 0.5 <= record["p_track"] <= 2.0 and 0.3 <= record["p_star"] <= 2.5
        assert {"noise_ratio_median", "frac_no_mean", "p_smoothed"} <= set(record)
    assert capsys.readouterr().out.count("--p track: step ") == 4
    config = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert config["train"]["p_track"] is True and config["resolved"]["p_every"] == 3
    for stop in (4, 7):  # interrupted between updates, with checkpoints before and after one
        out = tmp_path / f"cut{stop}"
        train(dataclasses.replace(cfg, out=str(out), stop_after=stop))
        train(dataclasses.replace(cfg, out=str(out), resume=True))
        assert [(r["step"], r["loss"], r.get("p_track")) for r in records(out)] == \
               [(r["step"], r["loss"], r.get("p_track")) for r in straight]


def test_p_track_parses_everywhere_p_does_and_refuses_what_it_cannot_do(tmp_path, capsys):
    cfg = TrainConfig(p="track")
    assert cfg.p_track and cfg.p == 1.0 and cfg.p_every_steps == 100
    assert run_name(cfg) == "llama-tiny-adampower-ptrack-s0"
    assert run_name(TrainConfig(p="track", p_every=50)) == "llama-tiny-adampower-ptrack-p_every50-s0"
    assert parse_arm("optim=muonpower p=track").overrides == {"optim": "muonpower", "p": "track"}
    assert TrainConfig(optim="muonpower", p="track").p_track
    for kwargs, message in (({"optim": "adamw"}, "needs a \\*power optimizer"),
                            ({"p_every": 2000}, "p_every must be in \\[1, steps\\]"),
                            ({"p_start": 3.0}, "p_start <= p_max"), ({"p_smooth": 2.0}, "p_smooth")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(p="track", **kwargs)
    with pytest.raises(ValueError, match="not both"):
        TrainConfig(p="track", p_auto=True)
    with pytest.raises(SystemExit) as exited:
        main(["train", "--p", "tracked", "--out", str(tmp_path / "x")])
    assert exited.value.code == 2
    assert "'auto' or 'track'" in capsys.readouterr().err
