"""The harness without silent surprises: GPAS fidelity options, config checks, light install."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradpower.cli import main
from gradpower.models import build_model, preset
from gradpower.models.norms import layer_placement
from gradpower.train import TrainConfig
from gradpower.train.loop import clip_gradients

# -- GPAS fidelity ----------------------------------------------------------------------------------

def test_gpas_init_uses_the_authors_embedding_std():
    torch.manual_seed(0)
    model = build_model(preset("llama-small", init="gpas", norm="pre_gpas"))
    assert model.model.embed_tokens.weight.std().item() == pytest.approx((2 / 5) ** 0.5, rel=0.01)
    assert model.lm_head.weight.std().item() == pytest.approx(0.02, rel=0.02)
    plain = build_model(preset("llama-small"))
    assert plain.model.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.02)


def test_gpas_init_gives_plain_deepnorm_the_authors_xavier_gains():
    torch.manual_seed(0)
    n = 6
    model = build_model(preset("llama-small", init="gpas", norm="deepnorm", n_layers=n))
    attn, mlp = model.model.layers[2].self_attn, model.model.layers[2].mlp

    def xavier_std(weight, gain):
        fan_out, fan_in = weight.shape
        return gain * math.sqrt(2.0 / (fan_in + fan_out))

    small = (8 * n) ** -0.25
    for weight, gain in ((attn.q_proj.weight, 1.0), (attn.k_proj.weight, 1.0), (attn.v_proj.weight, small),
                         (attn.o_proj.weight, small), (mlp.gate_proj.weight, small), (mlp.down_proj.weight, small)):
        assert weight.std().item() == pytest.approx(xavier_std(weight, gain), rel=0.03)
    # The authors apply the Xavier scheme to their plain DeepNorm only.
    gpas = build_model(preset("llama-small", init="gpas", norm="deepnorm_gpas", n_layers=n))
    assert gpas.model.layers[2].self_attn.v_proj.weight.std().item() == pytest.approx(0.02, rel=0.03)


def test_mix_ln_post_layers_are_configurable():
    assert [layer_placement("mix", i, 8) for i in range(8)] == ["post"] * 2 + ["pre"] * 6
    assert [layer_placement("mix_gpas", i, 8, 5) for i in range(8)] == ["post"] * 5 + ["pre"] * 3
    model = build_model(preset("llama-tiny", norm="mix", mix_post_layers=3))
    assert [layer.placement for layer in model.model.layers] == ["post"] * 3 + ["pre"]
    with pytest.raises(ValueError, match="mix_post_layers"):
        preset("llama-tiny", norm="mix", mix_post_layers=9)
    with pytest.raises(ValueError, match="unknown init"):
        preset("llama-tiny", init="xavier")


def test_gates_are_clipped_with_everything_then_again_alone():
    """The GPAS authors' order: global clip of all parameters (gates included), then the gates alone."""
    model = build_model(preset("llama-tiny", norm="pre_gpas", vocab_size=32, max_seq_len=8))
    gen = torch.Generator().manual_seed(0)
    for name, param in model.named_parameters():
        param.grad = torch.randn(param.shape, generator=gen) * (3.0 if name.endswith("gpas.gate") else 0.01)
    raw = {name: param.grad.clone() for name, param in model.named_parameters()}
    total = math.sqrt(sum(float(g.double().pow(2).sum()) for g in raw.values()))
    clip, gate_clip = 1.0, 0.05
    norm = clip_gradients(model, clip, gate_clip)
    assert norm == pytest.approx(total, rel=1e-5)
    scale = clip / (total + 1e-6)
    gate_names = [n for n in raw if n.endswith("gpas.gate")]
    gate_norm = math.sqrt(sum(float((raw[n] * scale).double().pow(2).sum()) for n in gate_names))
    gate_scale = gate_clip / (gate_norm + 1e-6)
    for name, param in model.named_parameters():
        expected = raw[name] * scale * (gate_scale if name in gate_names else 1.0)
        torch.testing.assert_close(param.grad, expected, rtol=1e-5, atol=1e-9)


# -- config checks ----------------------------------------------------------------------------------

def test_warmup_default_fits_short_runs():
    assert TrainConfig(steps=16).warmup_steps == 1
    assert TrainConfig(steps=5).warmup_steps == 0
    assert TrainConfig(steps=5000).warmup_steps == 100
    assert TrainConfig(steps=16, warmup=3).warmup_steps == 3


@pytest.mark.parametrize("line, message", [
    ('steps = "6"', "key steps must be an integer, got '6' (str)"),
    ("steps = 6.5", "key steps must be an integer, got 6.5 (float)"),
    ('weight_decay = "x"', "key weight_decay must be a number, got 'x' (str)"),
    ('resume = "no"', "key resume must be true or false, got 'no' (str)"),
    ("lr = true", "key lr must be a number, got True (bool)"),
    ("seed = 1.0", "key seed must be an integer"),
])
def test_toml_values_are_type_checked_like_flags(tmp_path, capsys, line, message):
    toml = tmp_path / "c.toml"
    toml.write_text(line + "\n")
    assert main(["train", "--config", str(toml)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(toml) in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv, message", [
    (["--lr", "inf"], "lr must be a finite number, got inf"),
    (["--p", "nan"], "p must be a finite number"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--beta2", "1.5"], "beta2 must be in [0, 1)"),
    (["--init", "xavier"], "unknown init 'xavier'"),
])
def test_bad_values_are_one_line_errors(capsys, tmp_path, argv, message):
    assert main(["train", *argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_short_run_without_warmup_flag_trains(tmp_path):
    argv = ["train", "--steps", "16", "--batch-size", "2", "--seq-len", "16", "--eval-every", "0",
            "--bpe-vocab-size", "300", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
            "--device", "cpu", "--eval-batches", "1", "--init", "gpas", "--norm", "pre_gpas"]
    assert main(argv) == 0


def test_a_failed_shard_build_leaves_no_temporary_files(tmp_path, capsys):
    corpus = tmp_path / "one-doc.txt"
    corpus.write_text("a single short document that cannot fill both splits\n")
    cache = tmp_path / "cache"
    argv = ["train", "--data", str(corpus), "--steps", "2", "--bpe-vocab-size", "300", "--cache-dir", str(cache),
            "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main(argv) == 2
    assert "split is empty" in capsys.readouterr().err
    assert not [p for p in cache.rglob("*") if ".tmp" in p.name]


# -- a light optimizer install -----------------------------------------------------------------------

HEAVY = ("tokenizers", "datasets", "pyarrow", "tqdm", "matplotlib", "safetensors", "transformers")


def test_importing_the_optimizers_imports_no_harness_dependency():
    # torch itself imports tqdm when it is installed (torch.hub): count only what gradpower adds.
    code = ("import sys, torch; before = set(sys.modules); import gradpower, gradpower.models; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules and m not in before))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_harness_command_without_the_extra_names_the_extra():
    code = ("import sys; sys.modules['tokenizers'] = None; sys.modules['tqdm'] = None; "
            "from gradpower.cli import main; sys.exit(main(['train', '--steps', '2']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    root = Path(__file__).resolve().parent.parent  # the clone: the command works from any folder
    assert f"pip install -e '{root}[train]'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
