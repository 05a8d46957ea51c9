"""Fully sharded data-parallel training (``trainer.strategy=fsdp`` / ``hsdp``): PyTorch's per-parameter FSDP2.

Each parameter is split along its first dimension over a shard group of ranks, so a rank holds 1/group of
the weights, gradients and AdamW state. Under ``fsdp`` the group is every rank; under ``hsdp`` (hybrid
sharding) it is the ranks of one node, and the nodes hold replicas whose gradients are averaged across
nodes: the per-block gathers stay on a node's own links, and only the gradient all-reduce crosses nodes.
A model and its EMA copy are sharded alike (:func:`shard_with_ema`): their shards then have the same
shapes and placements on every rank, and the EMA update stays a local ``lerp_`` per shard with no
communication. Checkpoints are gathered into one ordinary file on rank 0, the file a single process
writes, so ``navid sample``, ``navid evaluate`` and ``--resume`` (under any strategy and world size)
read it as before.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, set_model_state_dict, set_optimizer_state_dict,
)
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method
from torch.optim import Optimizer


class FullyShardedStrategy(ModelParallelStrategy):
    """FSDP2 data parallelism over every rank of every node (no tensor parallelism), with full single-file
    checkpoints; ``hybrid``: sharded within each node and replicated across nodes (HSDP).

    Lightning's ``ModelParallelStrategy`` defaults its data-parallel size to the number of nodes and
    leaves the GPUs of a node to tensor parallelism; here every rank is a data-parallel rank with a
    data shard of its own. The LightningModule shards itself in ``configure_model`` over :attr:`shard_mesh`.
    """

    def __init__(self, hybrid: bool = False) -> None:
        super().__init__(save_distributed_checkpoint=False)
        self.hybrid = hybrid
        self.shard_mesh: Optional[DeviceMesh] = None

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()
        if self.hybrid:  # (nodes, ranks per node): FSDP2 replicates over the first dimension, shards over the second
            check_ranks_node_by_node(self.num_processes, self.node_rank, self.local_rank)
            self.shard_mesh = init_device_mesh(self.root_device.type, (self.num_nodes, self.num_processes),
                                               mesh_dim_names=("replicate", "shard"))
        else:
            self.shard_mesh = self.device_mesh["data_parallel"]

    @contextmanager
    def block_backward_sync(self) -> Iterator[None]:
        """Entered by Lightning for the micro-batches before the last of a gradient accumulation.

        Under hsdp their gradient shards are reduce-scattered within the node, as always, but not yet averaged
        across nodes: FSDP2 holds the partial sums and adds them in at the last micro-batch, whose all-reduce is
        the one that crosses nodes in each optimizer step. Under fsdp every micro-batch is reduce-scattered, which
        keeps the gradients sharded (deferring it would hold whole gradients on every rank).
        """
        sharded = [m for m in self.lightning_module.modules() if is_sharded(m)] if self.hybrid else []
        for module in sharded:
            module.set_requires_all_reduce(False, recurse=False)
        try:
            yield
        finally:
            for module in sharded:
                module.set_requires_all_reduce(True, recurse=False)

    @property
    def description(self) -> str:
        """Where the weights are split, for the log line at start-up."""
        if self.hybrid:
            return (f"trainer.strategy=hsdp: sharded over the {self.num_processes} ranks of each node, "
                    f"replicated over {self.num_nodes} node(s)")
        return f"trainer.strategy=fsdp: sharded over all {self.world_size} ranks"

    def load_checkpoint(self, checkpoint_path: str | os.PathLike, weights_only: Optional[bool] = None) -> dict:
        """Load a full checkpoint, written under any strategy, into the sharded module and optimizer.

        Lightning's own load re-keys a file's optimizer state by assuming its parameter ids follow
        ``module.parameters()``. A DDP or one-process file numbers them in the optimizer's order instead
        (the weight-decay group first), so the ids name other parameters and the load fails ("Missing
        optimizer state for parameter") or meets the wrong shapes. Here each id is
        named by pairing the file's parameter groups with this optimizer's, in order, as
        ``torch.optim.Optimizer.load_state_dict`` does: right for files of both kinds.
        """
        path = Path(self.broadcast(checkpoint_path))
        checkpoint = torch.load(path, mmap=True, map_location="cpu", weights_only=weights_only)
        full = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(self.model, checkpoint.pop("state_dict"), options=full)
        names = {id(param): name for name, param in self.model.named_parameters()}
        for optimizer, saved in zip(self.optimizers, checkpoint["optimizer_states"]):
            by_name = optimizer_state_by_name(saved, optimizer, names, path)
            set_optimizer_state_dict(self.model, optimizer, optim_state_dict=by_name, options=full)
        return checkpoint


def check_ranks_node_by_node(ranks_a_node: int, node_rank: int, local_rank: int) -> None:
    """Raise on every rank unless each node's ranks are numbered together (global = node x ranks a node + local),
    the layout the hsdp mesh's rows assume; a collective, so all ranks raise together instead of some waiting on
    the others."""
    layout: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(layout, (node_rank, local_rank))
    for rank, (node, local) in enumerate(layout):
        if rank != node * ranks_a_node + local:
            raise ValueError(
                f"trainer.strategy=hsdp needs the ranks of each node numbered together (as torchrun and srun's default "
                f"block distribution number them): global rank {rank} is local rank {local} of node {node}, where "
                f"rank {node * ranks_a_node + local} was expected; use trainer.strategy=fsdp or number ranks by node"
            )


def optimizer_state_by_name(saved: dict, optimizer: Optimizer, names: dict[int, str], path: Path) -> dict:
    """``saved`` (an optimizer's ``state_dict()``, keyed by parameter ids) keyed by the parameter names of
    ``optimizer``'s parameters (``names``: ``id(param) -> name``), its groups paired with ``optimizer``'s in order."""
    saved_groups, groups = saved["param_groups"], optimizer.param_groups
    sizes, expected = [len(g["params"]) for g in saved_groups], [len(g["params"]) for g in groups]
    if sizes != expected:
        raise ValueError(f"{path}: its optimizer has parameter groups of {sizes} parameters, this run's has "
                         f"{expected}; it was written for another model")
    name_of = {key: names[id(param)] for saved_group, group in zip(saved_groups, groups)
               for key, param in zip(saved_group["params"], group["params"])}
    return {"state": {name_of[key]: state for key, state in saved["state"].items()},
            "param_groups": [{**group, "params": [name_of[key] for key in group["params"]]} for group in saved_groups]}


def is_sharded(module: nn.Module) -> bool:
    return isinstance(module, FSDPModule)


def shard_with_ema(model: nn.Module, ema: nn.Module, blocks: str, mesh: DeviceMesh,
                   forward_methods: Iterable[str]) -> None:
    """Shard ``model`` and its EMA copy alike: each of their ``blocks`` (a ``ModuleList`` attribute), then the rest.

    One block's weights are gathered at a time in the forward and backward passes. Methods named in
    ``forward_methods`` gather the module's own (non-block) weights as ``forward`` does. An FSDP root
    keeps its gathered weights after a forward pass until the backward pass; the EMA copy has none, so
    it gives them back after every forward pass, and the EMA update always meets two sharded modules.
    """
    for module, root_reshards in ((model, None), (ema, True)):
        for block in getattr(module, blocks):
            fully_shard(block, mesh=mesh)
        fully_shard(module, mesh=mesh, reshard_after_forward=root_reshards)
        for name in forward_methods:
            register_fsdp_forward_method(module, name)


def weights_on_this_rank(module: nn.Module) -> tuple[int, int]:
    """(weights this rank holds, weights in all) of a sharded ``module``."""
    params = list(module.parameters())
    return sum(p.to_local().numel() for p in params), sum(p.numel() for p in params)


def unsharded(module: nn.Module, build: Callable[[], nn.Module]) -> nn.Module:
    """``module`` itself, or, if it is sharded, a plain copy with its full weights on every rank.

    For work that calls a sharded module outside ``forward`` (KV-cache sampling). A collective: every
    rank must call it.
    """
    if not is_sharded(module):
        return module
    state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True))
    device = next(iter(state.values())).device
    plain = build()  # on the CPU, so the gathered weights and the copy are never on the device together
    plain.load_state_dict(state)
    del state
    return plain.to(device).eval().requires_grad_(False)
