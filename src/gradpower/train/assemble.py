"""What a run is assembled from before its loop starts, and what it can refuse before its folder is touched.

The model config of a run, its data config, the hardware choices it records
(they decide its numbers), and the checks that stop bad input early: one
run's (:func:`check_before_start`, called by :func:`gradpower.train.train`)
and an experiment's data, once (:func:`prepare_run_data`). :mod:`.loop` and
the experiments layer both assemble runs through this module.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..data.pipeline import DataConfig, needed_packages, prepare_data
from ..extras import require
from ..models import TransformerConfig, preset
from ..optim import is_power_optimizer
from ..optim.muonpower import MUON_OPTIMIZERS, default_ns_dtype
from ..optim.routes import power_kernel
from .config import TrainConfig


def model_config_for(cfg: TrainConfig, tokenizer_vocab: int | None = None) -> TransformerConfig:
    """The preset's config with the run's norm and sequence length; grown to fit the tokenizer."""
    overrides: dict[str, Any] = {"init": cfg.init, "mix_post_layers": cfg.mix_post_layers}
    if cfg.norm is not None:
        overrides["norm"] = cfg.norm
    if cfg.seq_len is not None:
        overrides["max_seq_len"] = cfg.seq_len
    model_cfg = preset(cfg.preset, **overrides)
    if tokenizer_vocab is not None and tokenizer_vocab > model_cfg.vocab_size:
        model_cfg = dataclasses.replace(model_cfg, vocab_size=tokenizer_vocab)
    return model_cfg


def hardware_choices(cfg: TrainConfig, device: torch.device) -> dict[str, str]:
    """What this machine chooses for the run that decides its numbers, recorded in its ``resolved`` config:
    MuonPower's Newton-Schulz dtype (``ns_dtype``: the config's, else :func:`default_ns_dtype`) and the
    ``|g|^p`` kernel of a power optimizer (``power_kernel``, :func:`gradpower.optim.routes.power_kernel`)."""
    choices = {"ns_dtype": cfg.ns_dtype or default_ns_dtype(device)} if cfg.optim in MUON_OPTIMIZERS else {}
    if is_power_optimizer(cfg.optim):
        choices["power_kernel"] = power_kernel(device)
    return choices


def check_before_start(cfg: TrainConfig, world_size: int = 1) -> None:
    """What can be refused before the run folder is touched: a batch that does not divide over the
    processes, and an optional package the run needs but this environment lacks (named with its extra)."""
    cfg.micro_batch(world_size)
    needs = needed_packages(data_config(cfg))
    needs += [("--tensorboard", "tensorboard")] if cfg.tensorboard else []
    needs += [("--wandb", "wandb")] if cfg.wandb else []
    for feature, module in needs:
        require(feature, module)


def prepare_run_data(cfg: TrainConfig) -> None:
    """What the run's data and tokenizer would refuse, found before it starts (see :func:`prepare_data`)."""
    model = model_config_for(cfg)
    prepare_data(data_config(cfg), model.vocab_size, model.max_seq_len)


def data_config(cfg: TrainConfig) -> DataConfig:
    """The data part of a run's configuration."""
    return DataConfig(data=cfg.data, tokenizer=cfg.tokenizer, bpe_vocab_size=cfg.bpe_vocab_size,
                      val_fraction=cfg.val_fraction, eval_batches=cfg.eval_batches, cache_dir=cfg.cache_dir,
                      verify_cache=cfg.verify_cache, eval_tokens=cfg.eval_tokens)
