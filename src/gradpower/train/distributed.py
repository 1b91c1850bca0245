"""Where a run executes: one process, or torchrun processes with DDP or FSDP2, on PyTorch's own engine.

Everything distributed lives here and in :mod:`.checkpoint`; the model code
never imports ``torch.distributed``. :func:`runtime` builds the process group
from torchrun's environment (gloo on CPU, NCCL on CUDA) and tears it down at
the end or on an error; :func:`parallelize` sits between building the model
and building the optimizer and returns the model wrapped (DDP) or sharded
(FSDP2, ``fully_shard`` per decoder layer, then the root).

Initialisation is identical to a single process for any process count: rank
0 initialises the full model from the seed on CPU and the other ranks build
on the meta device and receive their shards
(``set_model_state_dict(..., broadcast_from_rank0=True)``), so a comparison
means the same on 1 or N GPUs. The price is one full CPU copy on rank 0.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import BadInput

PARALLEL_MODES = ("none", "ddp", "fsdp")
# What a collective raises when a peer died or hung: torch's DistError family, or a backend RuntimeError.
_PEER_SIGNS = ("Connection reset", "Connection closed", "timed out", "Timeout", "Broken pipe", "NCCL", "Gloo", "gloo")


class PeerLostError(RuntimeError):
    """Another process of the run stopped or stopped answering; this one stopped too (one-line message)."""


def peer_lost(exc: BaseException) -> bool:
    """True when ``exc`` is a collective failing because another rank died or hung."""
    return isinstance(exc, dist.DistError) or (isinstance(exc, RuntimeError) and any(
        sign in str(exc) for sign in _PEER_SIGNS))


@dataclass(frozen=True)
class Runtime:
    """This process's device and its place among data-parallel ranks."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    parallel: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.parallel != "none"

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on CUDA, plain fp32 elsewhere."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a scalar over ranks (itself in one process)."""
        if self.distributed:
            value = value.detach().clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value /= self.world_size
        return value

    def agree(self, flag: bool) -> bool:
        """True on every rank when it is true on any rank (e.g. a stop request seen by one)."""
        if not self.distributed:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def broadcast_float(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (a decision every rank must share exactly)."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, src=0)
        return float(tensor.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` is CUDA when available (this rank's GPU under torchrun), else CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput(f"device {name!r} requested but CUDA is not available")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


@contextlib.contextmanager
def runtime(device: str = "auto", parallel: str = "none", timeout_s: float = 600.0) -> Iterator[Runtime]:
    """The Runtime of this process; under torchrun, a process group for the block's duration.

    A rank that fails (an exception, or a peer that died and left a
    collective hanging past ``timeout_s``) tears the group down, so no rank
    waits forever; torchrun then stops the others.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if parallel not in PARALLEL_MODES:
        raise BadInput(f"unknown parallel mode {parallel!r}; valid: {', '.join(PARALLEL_MODES)}")
    if parallel == "none":
        if world > 1:
            raise BadInput(f"launched with {world} processes (torchrun) but --parallel none: pass --parallel ddp "
                           "or --parallel fsdp")
        yield Runtime(resolve_device(device))
        return
    if "RANK" not in os.environ:
        raise BadInput(f"--parallel {parallel} needs torchrun's environment: launch with "
                       f"'torchrun --nproc_per_node=N -m gradpower train ... --parallel {parallel}'")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    here = resolve_device(device, local_rank)
    if here.type == "cuda":
        torch.cuda.set_device(here)
    backend = "nccl" if here.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s),
                            device_id=here if here.type == "cuda" else None)
    try:
        yield Runtime(here, rank, world, parallel)
        dist.barrier()  # leave together (a rank that exits early would break its peers' last collective)
    finally:
        dist.destroy_process_group()


def _broadcast_init(model: nn.Module, build: Callable[[torch.device | str], nn.Module], rt: Runtime) -> None:
    """Fill an FSDP2 model's shards with rank 0's seeded full initialisation."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full = build("cpu").state_dict() if rt.is_main else {}
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def parallelize(build: Callable[[torch.device | str], nn.Module], rt: Runtime, seed: int) -> nn.Module:
    """Build the model for this runtime: plain, wrapped in DDP, or sharded with FSDP2.

    ``build(device)`` builds and initialises the model on ``device`` (called
    after ``torch.manual_seed(seed)``, so every mode starts from the same weights).
    """
    if rt.parallel in ("none", "ddp"):
        torch.manual_seed(seed)
        model = build("cpu").to(rt.device)
        if rt.parallel == "none":
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(rt.device.type, (rt.world_size,))
    model = build("meta")
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.to_empty(device=rt.device)
    model.init_weights()  # on each rank's shard; also fills non-persistent buffers (RoPE), which no state dict carries

    def seeded(device: torch.device | str) -> nn.Module:
        torch.manual_seed(seed)
        return build(device)

    _broadcast_init(model, seeded, rt)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The model under a DDP wrapper (FSDP2 modules are the model itself)."""
    return getattr(model, "module", model)


def micro_batch_sync(model: nn.Module, rt: Runtime, last: bool) -> contextlib.AbstractContextManager:
    """Reduce gradients only on the last micro-batch of a step (phi_p then sees the all-reduced gradient)."""
    if rt.parallel == "ddp" and not last:
        return model.no_sync()
    if rt.parallel == "fsdp":
        model.set_requires_gradient_sync(last)
    return contextlib.nullcontext()


def full_value(value: Any) -> torch.Tensor:
    """A DTensor reduced to its full (replicated) value; any other tensor as it is."""
    return value.full_tensor() if hasattr(value, "full_tensor") else value
