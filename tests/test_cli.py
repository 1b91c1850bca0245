"""The gradpower command: flags from TrainConfig, TOML files, one-line errors."""

import json
from pathlib import Path

import pytest

from gradpower.cli import build_parser, config_from_args, main
from gradpower.train.config import TrainConfig, config_fields, load_toml

CONFIGS = sorted((Path(__file__).parent.parent / "src" / "gradpower" / "configs").glob("*.toml"))


#: A valid value other than the default for every knob: each is given as its flag and must arrive in the config.
#: A new knob without an entry here fails the test below (its flag would be untested).
FLAG_VALUES = {
    "preset": "llama-nano", "norm": "sandwich", "init": "gpas", "mix_post_layers": 1, "optim": "muonpower",
    "lr": 0.004, "weight_decay": 0.05, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "blockwise_lr": True,
    "decay_all": True, "momentum": 0.9, "nesterov": False, "ns_dtype": "float32", "fused": False, "foreach": True,
    "clip": 0.5, "gate_clip": 0.3, "p": 1.4, "p_auto": True, "p_auto_steps": 7, "p_auto_noise": "uniform",
    "p_track": True, "p_start": 1.1, "p_every": 9, "p_min": 0.6, "p_max": 1.9, "p_step": 0.05, "p_smooth": 0.7,
    "noise_every": 3, "schedule": "wsd", "steps": 321, "warmup": 11, "min_lr_ratio": 0.2, "stable_frac": 0.7,
    "data": "openwebtext", "tokenizer": "bpe", "bpe_vocab_size": 700, "batch_size": 12, "micro_batch_size": 3,
    "seq_len": 48, "val_fraction": 0.2, "eval_batches": 3, "eval_tokens": 4096, "cache_dir": "/tmp/gp-cache",
    "verify_cache": True, "seed": 5, "init_seed": 6, "data_seed": 7, "eval_every": 13, "log_every": 2,
    "ckpt_every": 17, "keep_ckpts": 4, "out": "/tmp/gp-run", "resume": True, "overwrite": True, "stop_after": 19,
    "device": "cpu", "parallel": "ddp", "compile": True, "dist_timeout": 30.0, "tensorboard": True, "wandb": True,
}


def _flag(name, value):
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    return [flag, str(value)]


def test_every_knob_parses_from_its_flag_into_the_config(capsys):
    fields = {f.name: f for f in config_fields()}
    assert set(FLAG_VALUES) == set(fields), "give every knob a test value in FLAG_VALUES"
    help_text = (pytest.raises(SystemExit, main, ["train", "--help"]), capsys.readouterr().out)[1]
    for name, value in FLAG_VALUES.items():
        assert value != fields[name].default, name
        assert fields[name].metadata["help"].split()[0] in help_text, name
        args = build_parser().parse_args(["train", *_flag(name, value)])
        if name == "resume":  # it reads the run folder's saved configuration (tests/test_train.py)
            assert args.resume is True
            continue
        cfg = config_from_args(args)
        got = {"p_auto": cfg.p_auto, "p": cfg.p}.get(name, getattr(cfg, name))
        assert got == value, f"{name}: {value!r} became {got!r}"
        changed = {k for k, v in cfg.to_dict().items() if v != fields[k].default}
        assert changed <= {name, "p"}, f"--{name} also changed {changed - {name}}"
    # a boolean's default is reachable by its --no- form, the optional ones by their flag
    assert config_from_args(build_parser().parse_args(["train", "--no-resume"])).resume is False
    assert config_from_args(build_parser().parse_args(["train", "--fused"])).fused is True


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_are_valid(path):
    cfg = TrainConfig(**load_toml(path))
    assert cfg.steps > cfg.warmup


def test_paper_configs_cover_every_preset_and_schedule():
    names = {p.stem for p in CONFIGS}
    for preset in (
        "llama-66m",
        "llama-0.2b",
        "llama-0.4b",
        "llama-1b",
        "llama-2b",
        "qwen2moe-0.5b",
        "qwen2moe-1b",
        "qwen2moe-2b",
    ):
        assert {f"{preset}-c4-cos", f"{preset}-c4-wsd"} <= names
    assert "llama-0.25b-owt" in names


def test_flags_override_the_config_file(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('preset = "qwen2moe-tiny"\nsteps = 50\nwarmup = 2\nbatch-size = 4\nblockwise_lr = true\n')
    args = build_parser().parse_args(
        ["train", "--config", str(toml), "--steps", "7", "--no-blockwise-lr", "--p", "1.5"]
    )
    cfg = config_from_args(args)
    assert (cfg.preset, cfg.steps, cfg.batch_size, cfg.blockwise_lr, cfg.p) == ("qwen2moe-tiny", 7, 4, False, 1.5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--preset", "gpt5"], "unknown preset 'gpt5'"),
        (["train", "--p", "-1"], "p must be a finite number > 0"),
        (["train", "--optim", "lion"], "unknown optimizer 'lion'"),
        (["train", "--data", "/no/such/file.txt", "--steps", "2", "--warmup", "0"], "no such file"),
    ],
)
def test_invalid_values_exit_2_with_one_line(argv, message, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_unknown_flag_and_bad_type_exit_2_with_one_line(capsys):
    for argv in (["train", "--bogus"], ["train", "--steps", "many"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "error" in err


def test_bad_config_file_keys(tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text("learning_rate = 1.0\n")
    assert main(["train", "--config", str(toml)]) == 2
    assert "unknown key(s) learning_rate" in capsys.readouterr().err


def test_train_command_end_to_end(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--steps", "3", "--batch-size", "2", "--seq-len", "16", "--warmup", "1", "--eval-every", "0",
            "--bpe-vocab-size", "400", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--device", "cpu",
            "--eval-batches", "1"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3 and "val_loss" in rows[-1]
    assert main(argv + ["--steps", "5", "--resume"]) == 0
    assert (out / "checkpoints" / "step_00000005.pt").exists()


def test_only_bad_input_is_a_one_line_exit_2_and_a_bug_keeps_its_traceback(monkeypatch, capsys):
    """BadInput (what the user got wrong) ends in one line and exit 2; any other exception, a ValueError from deep
    inside included, is a bug: it propagates with its traceback (exit 1 from the interpreter)."""
    from gradpower.commands import report
    from gradpower.errors import BadInput

    def bad_input(args, command):
        raise BadInput("that folder is not an experiment")

    def bug(args, command):
        raise ValueError("an index went wrong deep inside")

    monkeypatch.setattr(report, "run", bad_input)
    assert main(["report", "somewhere"]) == 2
    assert capsys.readouterr().err == "gradpower: error: that folder is not an experiment\n"
    monkeypatch.setattr(report, "run", bug)
    with pytest.raises(ValueError, match="an index went wrong deep inside"):
        main(["report", "somewhere"])
    assert issubclass(BadInput, ValueError)  # library callers that catch ValueError keep working
