"""The gradpower command: flags from TrainConfig, TOML files, one-line errors."""

import json
from pathlib import Path

import pytest

from gradpower.cli import build_parser, config_from_args, main
from gradpower.train.config import TrainConfig, config_fields, load_toml

CONFIGS = sorted((Path(__file__).parent.parent / "src" / "gradpower" / "configs").glob("*.toml"))


def test_every_config_field_has_a_documented_flag(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for field in config_fields():
        assert "--" + field.name.replace("_", "-") in text
        assert field.metadata["help"].split()[0] in text
    for flag in ("--preset", "--norm", "--optim", "--p", "--lr", "--schedule", "--warmup", "--steps", "--batch-size",
                 "--micro-batch-size", "--seq-len", "--data", "--tokenizer", "--eval-every", "--log-every",
                 "--ckpt-every", "--out", "--resume", "--seed", "--device", "--config"):
        assert flag in text


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
