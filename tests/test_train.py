"""The training loop end to end on the bundled corpus (tiny model, CPU)."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from gradpower.fileio import StorageError
from gradpower.models import CausalLM, build_model, preset, preset_lr
from gradpower.train import CheckpointError, NonFiniteLossError, TrainConfig, train
from gradpower.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from gradpower.train.distributed import Runtime
from gradpower.train.loop import accumulate_gradients, train_step
from gradpower.train.run_folder import RunFolderError

from .helpers import MICRO_EVAL_TOKENS

FIELDS = {"step", "tokens", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def tiny(tmp_path, cache, **kw):
    base = dict(
        preset="llama-tiny", seq_len=32, batch_size=8, micro_batch_size=4, steps=24, warmup=2, eval_every=8,
        eval_batches=2, log_every=1, bpe_vocab_size=512, cache_dir=cache, out=str(tmp_path / "run"), device="cpu",
        eval_tokens=MICRO_EVAL_TOKENS,
    )
    base.update(kw)
    return TrainConfig(**base)


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_end_to_end_loss_falls_and_run_folder_is_complete(tmp_path, cache):
    cfg = tiny(tmp_path, cache, steps=40, eval_every=20, ckpt_every=20, lr=3e-3)
    result = train(cfg)
    rows = records(result.run_dir)
    assert [r["step"] for r in rows] == list(range(1, 41))
    assert all(FIELDS <= set(r) for r in rows)
    assert [r["step"] for r in rows if "val_loss" in r] == [20, 40]
    assert rows[-1]["tokens"] == 40 * 8 * 32
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0
    assert result.final_val_loss == rows[-1]["val_loss"] < rows[19]["val_loss"] + 0.05
    assert [p.name for p in list_checkpoints(result.run_dir / "checkpoints")] == [
        "step_00000020.pt",
        "step_00000040.pt",
    ]
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["train"]["optim"] == "adampower" and config["model"]["arch"] == "llama"
    env = json.loads((result.run_dir / "env.json").read_text())
    assert {"torch", "gradpower", "device", "seed"} <= set(env)
    ckpt = load_checkpoint(result.last_checkpoint)
    assert {"model", "optimizer", "scheduler", "rng", "data", "step", "model_config"} <= set(ckpt)


# torch.optim.Muon runs Newton-Schulz in bf16, which is slow on CPUs without bf16 matmul
# units (~1 s/step even for llama-tiny), so the Muon case uses fewer steps.
@pytest.mark.parametrize(
    "optim, preset_name, steps, stop",
    [("adampower", "llama-tiny", 16, 7), ("adamw", "qwen2moe-tiny", 12, 5), ("muonpower", "llama-tiny", 5, 3)],
)
def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path, cache, optim, preset_name, steps, stop):
    kw = dict(optim=optim, preset=preset_name, ckpt_every=5, steps=steps, norm="pre_gpas", eval_every=4)
    straight = records(train(tiny(tmp_path / "a", cache, **kw)).run_dir)
    interrupted = tiny(tmp_path / "b", cache, stop_after=stop, **kw)
    first = train(interrupted)
    assert first.steps == stop and first.last_checkpoint.name == f"step_{stop:08d}.pt"
    train(dataclasses.replace(interrupted, stop_after=None, resume=True))
    resumed = records(interrupted.run_dir)
    assert [r["step"] for r in resumed] == list(range(1, steps + 1))
    for a, b in zip(straight, resumed):
        assert a["loss"] == b["loss"] and a["grad_norm"] == b["grad_norm"] and a.get("val_loss") == b.get("val_loss")


def test_resume_needs_a_checkpoint_and_refuses_another_config(tmp_path, cache):
    cfg = tiny(tmp_path, cache, steps=4)
    with pytest.raises(RunFolderError, match="holds no gradpower run"):
        train(dataclasses.replace(cfg, resume=True))
    train(cfg)
    with pytest.raises(StorageError, match="already holds a run: pass --resume"):
        train(cfg)
    with pytest.raises(RunFolderError, match=r"norm: None -> 'pre_gpas'"):
        train(dataclasses.replace(cfg, resume=True, norm="pre_gpas", steps=8))
    with pytest.raises(RunFolderError, match="optim: 'adampower' -> 'adamw'"):
        train(dataclasses.replace(cfg, resume=True, optim="adamw", steps=8))
    # A changed hyper-parameter that only the optimizer state would carry is refused too (it used to be
    # silently ignored: the old p stayed in the optimizer while config.json said the new one).
    with pytest.raises(RunFolderError, match=r"another configuration \(p: 1.2 -> 1.5\)"):
        train(dataclasses.replace(cfg, resume=True, p=1.5, steps=8))
    with pytest.raises(RunFolderError, match=rf"lr: {preset_lr(cfg.preset)} -> 0.01; seed: 0 -> 1"):
        train(dataclasses.replace(cfg, resume=True, lr=0.01, seed=1, steps=8))
    # Extending the run and changing logging are allowed.
    train(dataclasses.replace(cfg, resume=True, steps=6, log_every=2, eval_every=3))


def test_crash_mid_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    folder = tmp_path / "ck"
    save_checkpoint(folder, 1, {"step": 1, "w": torch.ones(3)})

    def broken_save(obj, f):
        f.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(StorageError, match=r"no space left on .* while writing .*step_00000002.pt; previous "
                                           r"checkpoint 1 .* is intact"):
        save_checkpoint(folder, 2, {"step": 2, "w": torch.zeros(3)})
    assert [p.name for p in folder.iterdir()] == ["step_00000001.pt"]  # no temporary file left
    monkeypatch.undo()
    latest = latest_checkpoint(folder)
    assert latest.name == "step_00000001.pt"
    assert torch.equal(load_checkpoint(latest)["w"], torch.ones(3))
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(folder / "step_00000099.pt")
    (folder / "step_00000005.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a valid gradpower checkpoint"):
        load_checkpoint(folder / "step_00000005.pt")


def test_nan_loss_stops_with_step_and_keeps_last_checkpoint(tmp_path, cache, monkeypatch):
    calls = {"n": 0}
    original = CausalLM.forward

    def poisoned(self, input_ids, labels=None):
        out = original(self, input_ids, labels)
        if self.training:
            calls["n"] += 1
            if calls["n"] > 2 * 5:  # two micro-batches per step: step 6 goes bad
                out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(CausalLM, "forward", poisoned)
    cfg = tiny(tmp_path, cache, steps=10, ckpt_every=4)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 6.*step_00000004.pt"):
        train(cfg)
    ckpt = load_checkpoint(latest_checkpoint(cfg.run_dir / "checkpoints"))
    assert ckpt["step"] == 4 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_accumulation_gives_the_same_gradient():
    torch.manual_seed(0)
    model = build_model(preset("llama-tiny", vocab_size=128, max_seq_len=16))
    batch = torch.randint(0, 128, (8, 16))
    runtime = Runtime(torch.device("cpu"))

    def grads(micro_batches):
        model.zero_grad(set_to_none=True)
        loss = accumulate_gradients(model, micro_batches, runtime)
        return loss, [p.grad.clone() for p in model.parameters()]

    loss_one, g_one = grads([batch])
    loss_four, g_four = grads(list(batch.split(2)))
    assert loss_one.item() == pytest.approx(loss_four.item(), rel=1e-6)
    for a, b in zip(g_one, g_four):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_gate_clip_clips_gpas_gates_separately(tmp_path, cache):
    cfg = tiny(tmp_path, cache, steps=3, norm="pre_gpas", gate_clip=1e-6, optim="sgd", lr=1.0, warmup=0,
               schedule="constant", weight_decay=0.0)
    result = train(cfg)
    state = load_checkpoint(result.last_checkpoint)["model"]
    gates = [v.item() for k, v in state.items() if k.endswith("gpas.gate")]
    # SGD with lr 1, momentum 0.95 over 3 steps: each gate moves by at most ~3 * 2.9 * 1e-6.
    assert gates and all(abs(g) < 1e-5 for g in gates) and any(g != 0 for g in gates)


def test_wsd_run_logs_the_schedule(tmp_path, cache):
    result = train(tiny(tmp_path, cache, steps=10, warmup=2, schedule="wsd", lr=1e-3, eval_every=0))
    lrs = [r["lr"] for r in records(result.run_dir)]
    assert lrs[:2] == pytest.approx([5e-4, 1e-3]) and lrs[7] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-4)
    assert math.isfinite(result.final_val_loss)


def test_tensorboard_logging_writes_events(tmp_path, cache):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = train(tiny(tmp_path, cache, steps=4, eval_every=2, tensorboard=True))
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    assert {"loss", "lr", "grad_norm", "val_loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("loss")] == [1, 2, 3, 4]


def test_train_step_is_backward_clip_update_schedule_against_a_hand_written_step():
    torch.manual_seed(0)
    ours = build_model(preset("llama-tiny", vocab_size=128, max_seq_len=16))
    theirs = build_model(preset("llama-tiny", vocab_size=128, max_seq_len=16))
    theirs.load_state_dict(ours.state_dict())
    opt_a, opt_b = (torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (ours, theirs))
    sched = torch.optim.lr_scheduler.LambdaLR(opt_a, lambda s: 0.5 ** s)
    sched_b = torch.optim.lr_scheduler.LambdaLR(opt_b, lambda s: 0.5 ** s)
    runtime = Runtime(torch.device("cpu"))
    for step in range(3):
        batch = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(step))
        seen = []
        result = train_step(ours, opt_a, list(batch.split(2)), runtime, clip=0.5, scheduler=sched,
                            before_update=lambda r, seen=seen: seen.append(r.to_host()))
        halves = [theirs(half, labels=half).loss for half in batch.split(2)]
        for half_loss in halves:
            (half_loss / 2).backward()
        loss = sum(halves) / 2
        norm = torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.5)
        opt_b.step()
        sched_b.step()
        opt_b.zero_grad()
        assert seen[0] == result.to_host()
        assert result.loss.item() == pytest.approx(loss.item(), rel=1e-5)
        assert result.grad_norm.item() == pytest.approx(norm.item(), rel=1e-4)
        assert all(p.grad is None for p in ours.parameters())
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_final_evaluation_holds_the_same_tokens_for_every_seed_and_its_se_by_hand(tmp_path, cache):
    from gradpower.data.pipeline import DataConfig, build_data
    from gradpower.train.evaluate import evaluate_tokens

    def final_tokens(seed, micro):
        data = build_data(DataConfig(cache_dir=cache, bpe_vocab_size=300, eval_tokens=2000), seq_len=32,
                          micro_batch_size=micro, seed=seed, vocab_size=300)
        return torch.cat(data.final_val)

    reference = final_tokens(0, 4)
    assert reference.numel() >= 2000 and reference.shape[1] == 32
    for seed, micro in ((1, 4), (7, 3)):
        assert torch.equal(final_tokens(seed, micro), reference)  # any seed, any micro-batch: the same tokens
    torch.manual_seed(0)
    model = build_model(preset("llama-tiny", vocab_size=300, max_seq_len=32))
    batches = list(reference[:10].split(4))
    got = evaluate_tokens(model, batches, Runtime(torch.device("cpu")))
    with torch.no_grad():  # by hand: -log softmax of each next token, every position but the last
        per_token = []
        for row in reference[:10]:
            logp = torch.log_softmax(model(row[None]).logits[0].double(), dim=-1)
            per_token += [-logp[i, row[i + 1]].item() for i in range(31)]
    values = np.array(per_token)
    assert got.tokens == 310
    assert got.loss == pytest.approx(values.mean(), rel=1e-6)
    assert got.se == pytest.approx(values.std(ddof=1) / np.sqrt(values.size), rel=1e-4)
