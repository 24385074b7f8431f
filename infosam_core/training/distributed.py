"""Training on several processes (``torchrun``): PyTorch's distributed data parallel, one rank per device.

Everything the trainer needs to know about distribution is here, behind :class:`DistributedContext`; with one
process (no initialised process group) every operation is the identity, so the single-process path is the
distributed path with ``world_size = 1``.

How a step is split (see :class:`~infosam_core.training.trainer.Trainer`): ``batch_size`` is the *global*
batch B; rank r takes rows ``[r * B/W, (r + 1) * B/W)`` of every global batch (W = world size, B divisible by
W). Each rank forwards its share through its replica of the student (wrapped in
:class:`torch.nn.parallel.DistributedDataParallel`, which averages the gradients over the ranks in backward).

Why the losses need no rescaling:

* the segmentation loss is a mean over the local b = B/W samples; DDP's average over W ranks of equal
  shares is the mean over the B samples: the single-process gradient;
* a batch-statistic loss L (InfoSAM's B x B Gram matrices, PKT's) is computed on the *gathered* global batch,
  identically on every rank. :meth:`DistributedContext.gather` is the functional collective ``all_gather_single``
  (``torch.distributed._functional_collectives``), whose backward sums the gradients of every rank's copy of
  L into each rank's slot (a reduce-scatter with SUM): rank r receives
  W * dL/dx_r for its own rows x_r. DDP then averages over ranks: (1/W) sum_r W dL/dx_r dx_r/dtheta =
  dL/dtheta, the single-process gradient. Parameters that act on gathered tensors (computed after the
  gather) get the full dL/dtheta on every rank, and the average of W equal copies is again dL/dtheta.
  So the factor is 1; ``tests/test_distributed.py`` checks it against a one-process run.

Decisions that must agree (or a rank would wait forever in a collective): stop (cancel, time budget) is an
all-reduce of a code (:meth:`DistributedContext.agree_max`); the step's loss values are all-reduced before
backward, so a non-finite loss anywhere is non-finite everywhere and every rank skips the step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    """True when this process is one of several started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def backend_for(device: torch.device) -> str:
    """NCCL on CUDA devices, gloo on the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_from_environment(device: torch.device, timeout_s: float = 3600.0) -> DistributedContext:
    """Join the process group torchrun describes (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``PORT``) with the
    backend for ``device`` and return the context. Without torchrun: the one-process context.

    ``timeout_s``: how long a collective may wait for the other ranks (a slow rank-0 save or validation must
    fit in it).
    """
    if not launched_by_torchrun():
        return DistributedContext()
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        device_id: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend_for(device), timeout=timedelta(seconds=timeout_s), **device_id)
    return DistributedContext.current(device)


def shutdown() -> None:
    """Leave the process group (when one was joined)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@dataclass(frozen=True)
class DistributedContext:
    """The process's place in a data-parallel run: ``rank`` of ``world_size`` (0 of 1 without distribution).

    ``device``: where this rank's tensors live (collectives on NCCL need CUDA tensors).
    """

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @classmethod
    def current(cls, device: torch.device) -> DistributedContext:
        """The context of the initialised default process group, or the one-process context."""
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), device)
        return cls(0, 1, device)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints, saves and writes logs."""
        return self.rank == 0

    def shard(self, global_rows: list[int] | tuple[int, ...]) -> list[int]:
        """This rank's equal share of a global batch's rows: ``rows[rank * b : (rank + 1) * b]``, b = B / W."""
        b = len(global_rows) // self.world_size
        return list(global_rows[self.rank * b : (self.rank + 1) * b])

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """(b, ...) per rank -> (W * b, ...) global batch in rank order, **with gradients** to every rank's rows.

        Identity in one process. Backward sums the gradients of all ranks' copies into each rank's slot (see
        the module docstring for why the loss then needs no rescaling under DDP).
        """
        if not self.enabled:
            return tensor
        from torch.distributed._functional_collectives import all_gather_single

        world = dist.group.WORLD
        if world is None:
            raise RuntimeError("no default process group: DistributedContext.enabled without one")
        gathered = all_gather_single(tensor.contiguous(), 0, world)  # differentiable: reduce-scatter back
        return gathered.wait() if hasattr(gathered, "wait") else gathered

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise mean of ``values`` over the ranks (a non-finite value anywhere stays non-finite)."""
        if not self.enabled:
            return values
        out = values.detach().to(self.device, torch.float64).clone()
        dist.all_reduce(out)
        return (out / self.world_size).to(values.dtype)

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum of ``values`` over the ranks."""
        if not self.enabled:
            return values
        out = values.detach().to(self.device, torch.float64).clone()
        dist.all_reduce(out)
        return out.to(values.dtype)

    def agree_max(self, code: int) -> int:
        """The largest of every rank's ``code``: a decision (stop, skip) taken by all ranks together."""
        if not self.enabled:
            return code
        t = torch.tensor([code], dtype=torch.int64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` in :class:`~torch.nn.parallel.DistributedDataParallel` (gradients averaged over the ranks
        in backward; the parameters are broadcast from rank 0 once), or ``module`` itself in one process."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            module,
            device_ids=None,  # inputs are already on this rank's device (a Batch is not a plain tensor)
            broadcast_buffers=False,  # SAM's buffers (pixel mean/std, positional gaussian) never change
            find_unused_parameters=True,  # e.g. the IoU head and the multi-mask tokens train but are not used
        )
