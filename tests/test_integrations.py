"""The optimizers inside the tools users bring: HF Trainer, accelerate, Lightning, ZeRO.

Each test compares against an independent reference: a hand-written loop (or a
hand-written optimizer) that applies the float64 formula sign(g)|g|^p and then
torch's own AdamW. Skipped only when the framework is not installed (the test
extra installs all of them, so CI runs every one).
"""

import pytest
import torch
from torch import nn

from gradpower import AdamPower, GradPower, MuonPower, MuonPowerFactory, power_class

from .helpers import TinyNet, assert_params_close, batches, loss_of, reference_phi, twin

ADAM_KW = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)


class ReferenceAdamPower(torch.optim.AdamW):
    """Hand-written reference: the float64 formula on every gradient, then torch's AdamW."""

    def __init__(self, params, p=1.2, **kw):
        super().__init__(params, **kw)
        self.p = p

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for prm in group["params"]:
                if prm.grad is not None:
                    prm.grad.copy_(reference_phi(prm.grad, self.p))
        super().step()
        return loss


def hand_loop(model, micro_batches, accumulate, clip, p=1.2):
    """Accumulate ``accumulate`` micro-batches (mean), clip the raw norm, transform, AdamW."""
    opt = torch.optim.AdamW(model.parameters(), **ADAM_KW)
    for start in range(0, len(micro_batches), accumulate):
        opt.zero_grad()
        for batch in micro_batches[start:start + accumulate]:
            (loss_of(model, batch) / accumulate).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        with torch.no_grad():
            for prm in model.parameters():
                prm.grad.copy_(reference_phi(prm.grad, p))
        opt.step()


# -- Hugging Face transformers.Trainer --------------------------------------------------------------

def _hf_setup(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, 64, (12,), generator=gen) for _ in range(48)]
    dataset = [{"input_ids": r, "labels": r} for r in rows]

    def args(out, max_steps, **kw):
        return transformers.TrainingArguments(
            output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=4, learning_rate=1e-2,
            lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=1.0, seed=0, data_seed=0,
            report_to=[], use_cpu=True, logging_steps=1, save_strategy="steps", save_steps=3,
            disable_tqdm=True, dataloader_num_workers=0, **kw,
        )

    return transformers, model, dataset, args


def test_hf_trainer_runs_adampower_like_the_reference_and_resumes_exactly(tmp_path):
    transformers, model, dataset, args = _hf_setup(tmp_path)
    state0 = {k: v.clone() for k, v in model.state_dict().items()}

    def fit(make_opt, out, max_steps, resume=None):
        m = transformers.LlamaForCausalLM(model.config)
        m.load_state_dict(state0)
        trainer = transformers.Trainer(model=m, args=args(out, max_steps), train_dataset=dataset,
                                       optimizers=(make_opt(m), None))
        trainer.train(resume_from_checkpoint=resume)
        return m

    ours = fit(lambda m: AdamPower(m.parameters(), **ADAM_KW), tmp_path / "ours", 6)
    ref = fit(lambda m: ReferenceAdamPower(m.parameters(), **ADAM_KW), tmp_path / "ref", 6)
    assert_params_close(ours, ref, rtol=1e-5, atol=1e-6)
    # Save at step 3, resume from the saved optimizer/scheduler/RNG state: the same weights as straight through.
    fit(lambda m: AdamPower(m.parameters(), **ADAM_KW), tmp_path / "cut", 3)
    resumed = fit(lambda m: AdamPower(m.parameters(), **ADAM_KW), tmp_path / "cut", 6,
                  resume=str(tmp_path / "cut" / "checkpoint-3"))
    for (name, a), (_, b) in zip(ours.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), name


def test_hf_trainer_builds_muonpower_from_optimizer_cls_and_kwargs(tmp_path):
    transformers, model, dataset, args = _hf_setup(tmp_path)
    trainer = transformers.Trainer(model=model, args=args(tmp_path / "muon", 3), train_dataset=dataset,
                                   optimizer_cls_and_kwargs=(MuonPowerFactory, {"lr": 1e-2, "p": 1.2}))
    trainer.train()
    opt = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    assert isinstance(opt, MuonPower)
    muon = {n for g in opt.param_groups if g["use_muon"] for n in g["param_names"]}
    assert "model.layers.0.self_attn.q_proj.weight" in muon
    assert not any("embed" in n or "lm_head" in n for n in muon)
    assert all(opt.state[prm] for g in opt.param_groups for prm in g["params"])  # every parameter stepped
    # The plain-class form: Trainer passes the model itself when kwargs carry "model".
    trainer = transformers.Trainer(model=model, args=args(tmp_path / "muon2", 1), train_dataset=dataset,
                                   optimizer_cls_and_kwargs=(MuonPower, {"model": model, "lr": 1e-2}))
    trainer.train()


def test_hf_trainer_builds_any_wrapped_optimizer_from_power_class(tmp_path):
    transformers, model, dataset, args = _hf_setup(tmp_path)
    trainer = transformers.Trainer(model=model, args=args(tmp_path / "sgd", 2), train_dataset=dataset,
                                   optimizer_cls_and_kwargs=(power_class(torch.optim.SGD),
                                                             {"lr": 0.1, "momentum": 0.9, "p": 1.2}))
    trainer.train()
    opt = trainer.optimizer.optimizer if hasattr(trainer.optimizer, "optimizer") else trainer.optimizer
    assert isinstance(opt, GradPower) and isinstance(opt.optimizer, torch.optim.SGD) and opt.p == 1.2
    assert all(opt.state[prm] for g in opt.param_groups for prm in g["params"])  # every parameter stepped


# -- accelerate -------------------------------------------------------------------------------------

def test_accelerate_with_accumulation_and_clip_grad_norm(tmp_path):
    accelerate = pytest.importorskip("accelerate")
    a = TinyNet()
    b = twin(a)
    data = batches(8)
    accelerator = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=2)
    model, opt = accelerator.prepare(a, AdamPower(a.parameters(), **ADAM_KW))
    steps = 0
    for batch in data:
        with accelerator.accumulate(model):
            accelerator.backward(loss_of(model, batch))
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(model.parameters(), 0.5)
                steps += 1
            opt.step()
            opt.zero_grad()
    assert steps == 4
    hand_loop(b, data, accumulate=2, clip=0.5)
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)


# -- Lightning --------------------------------------------------------------------------------------

def test_lightning_configure_optimizers_with_gradient_clipping(tmp_path):
    lightning = pytest.importorskip("lightning")
    data = batches(5)

    class Module(lightning.LightningModule):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            return loss_of(self.net, batch)

        def configure_optimizers(self):
            return AdamPower(self.parameters(), **ADAM_KW)

    a = TinyNet()
    b = twin(a)
    trainer = lightning.Trainer(
        max_steps=5, accelerator="cpu", devices=1, gradient_clip_val=0.5, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
    )
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False)
    trainer.fit(Module(a), loader)
    hand_loop(b, data, accumulate=1, clip=0.5)
    assert_params_close(a, b, rtol=1e-5, atol=1e-6)


# -- ZeroRedundancyOptimizer ----------------------------------------------------------------------

def test_zero_redundancy_optimizer_with_adampower(tmp_path):
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        a = TinyNet()
        b = twin(a)
        zero = ZeroRedundancyOptimizer(a.parameters(), optimizer_class=AdamPower, **ADAM_KW, p=1.2)
        for batch in batches(5):
            zero.zero_grad()
            loss_of(a, batch).backward()
            zero.step()
        ref = ReferenceAdamPower(b.parameters(), **ADAM_KW)
        for batch in batches(5):
            ref.zero_grad()
            loss_of(b, batch).backward()
            ref.step()
        assert_params_close(a, b, rtol=1e-5, atol=1e-6)
        zero.consolidate_state_dict(to=0)
        assert zero.state_dict()["param_groups"][0]["p"] == 1.2
    finally:
        dist.destroy_process_group()


def test_a_plain_module_can_be_split_without_names_using_muon_params():
    net = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.Linear(8, 10))
    opt = MuonPower(net.named_parameters(), muon_params=["1.weight"])
    assert [n for g in opt.param_groups if g["use_muon"] for n in g["param_names"]] == ["1.weight"]
