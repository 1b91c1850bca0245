"""TrainConfig in sections: each knob in one section, read by its own name too; a config.json saved by an earlier
version loads and names the same run folder; each section refuses its own bad values."""

import dataclasses
import json
from pathlib import Path

import pytest

from gradpower.errors import BadInput
from gradpower.optim import PowerController
from gradpower.train.config import TrainConfig, config_fields, run_name
from gradpower.train.sections import SECTIONS, PowerSection

SAVED = Path(__file__).parent / "data" / "config-0.1.0.json"  # written by gradpower 0.1.0 before the sections


def test_a_config_json_saved_before_the_sections_loads_and_keeps_its_run_folder_name():
    saved = json.loads(SAVED.read_text())["train"]
    cfg = TrainConfig.from_dict(saved)
    assert cfg.to_dict() == saved  # every knob back under its flat name, nothing added or lost
    assert f"runs/{run_name(cfg)}" == saved["out"]
    assert (cfg.preset, cfg.optimizer.optim, cfg.power.p, cfg.lr_schedule.schedule, cfg.dataset.batch_size,
            cfg.run.ckpt_every) == ("llama-nano", "adampower", 1.2, "wsd", 8, 1281)


def test_every_knob_lives_in_one_section_and_reads_and_writes_through_its_flat_name():
    owners = {}
    for section, kind in SECTIONS.items():
        for f in dataclasses.fields(kind):
            assert f.name not in owners, f"{f.name} in {owners.get(f.name)} and {section}"
            owners[f.name] = section
    assert list(owners) == [f.name for f in config_fields()]
    cfg = TrainConfig(lr=0.01, batch_size=4)
    assert cfg.optimizer.lr == cfg.lr == 0.01 and cfg.dataset.batch_size == 4
    cfg.steps = 77
    assert cfg.lr_schedule.steps == 77
    again = dataclasses.replace(cfg, seed=3)
    assert (again.seed, again.steps, again.lr) == (3, 77, 0.01) and again.lr_schedule is not cfg.lr_schedule


def test_sections_build_a_config_and_names_go_on_top():
    cfg = TrainConfig(power=PowerSection(p="track", p_every=5), steps=50)
    assert (cfg.power.mode, cfg.p, cfg.p_every_steps) == ("track", 1.0, 5)
    assert TrainConfig(power={"p": 1.4}, p=1.6).p == 1.6
    with pytest.raises(TypeError, match="unexpected keyword argument.*stepz"):
        TrainConfig(stepz=5)


def test_the_track_rules_are_the_controllers_and_name_the_flags(monkeypatch):
    """One rule: the config builds the controller and reports its refusal in the knobs' names."""
    for kwargs, message in (({"p_start": 3.0}, "--p track: need 0 < p_min <= p_start <= p_max"),
                            ({"p_step": 0.0}, "--p track: p_step must be > 0"),
                            ({"p_smooth": 2.0}, "--p track: p_smooth must be in \\(0, 1\\]")):
        with pytest.raises(BadInput, match=message):
            TrainConfig(p="track", **kwargs)
    assert TrainConfig(p="track").power.controller(100, 1e-8).every == 10
    assert TrainConfig(p=1.2).power.controller(100, 1e-8) is None

    def stricter(self, every, *args, **kwargs):
        raise BadInput("PowerController: every must be odd")

    monkeypatch.setattr(PowerController, "__init__", stricter)  # a new rule in the controller alone ...
    with pytest.raises(BadInput, match="--p track: p_every must be odd"):  # ... is the config's rule too
        TrainConfig(p="track")
    TrainConfig(p=1.2)


@pytest.mark.parametrize("kwargs, message", [
    ({"preset": "llama-huge"}, "unknown preset"), ({"beta2": 1.0}, "beta2 must be in \\[0, 1\\)"),
    ({"warmup": 2000}, "warmup must be in \\[0, steps\\)"), ({"val_fraction": 1.0}, "val_fraction"),
    ({"device": "tpu"}, "unknown device"), ({"p": "auto", "optim": "adamw"}, "needs a \\*power optimizer"),
    ({"lr": float("nan")}, "lr must be a finite number"), ({"steps": "6"}, "steps must be an integer"),
])
def test_each_section_refuses_its_own_bad_values_as_bad_input(kwargs, message):
    with pytest.raises(BadInput, match=message):
        TrainConfig(**kwargs)
