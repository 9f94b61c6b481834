"""The model as the training loop runs it: the objective's loss inside `forward`, wrapped for DDP or FSDP2.

DDP and FSDP synchronise only what flows through the wrapper's `forward`, and seqlm's fast
losses reach into the model (its body, then the output layer at chosen positions). So the
loss is computed in `ObjectiveModule.forward`, and that module is what gets wrapped:
`torch.nn.parallel.DistributedDataParallel`, or `torch.distributed.fsdp.fully_shard` on each
transformer block (the model's `_no_split_modules`) and on the whole.

`ParallelModel` also gives what a run saves from it: the full weights in HF format (gathered
from the shards under FSDP), and the loop state with the full optimizer state and every rank's
RNG state, so that a checkpoint resumes exactly with the same number of processes. With
training.lora's adapters it gives the merged model, and for checkpoints the adapters alone and the
optimizer state of them alone (under FSDP gathered from the shards, or those shards).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from seqlm.data.batch import Batch
from seqlm.errors import ConfigError
from seqlm.runtime.distributed import Cluster, on_main
from seqlm.training.checkpoint import SHARDED
from seqlm.training.objective import Objective

if TYPE_CHECKING:
    from seqlm.training.state import LoopState

Strategy = Literal["single", "ddp", "fsdp"]
_INNER = "model."  # ObjectiveModule's attribute: the prefix of its state-dict keys


class ObjectiveModule(torch.nn.Module):
    """`module(**inputs)`: the model's outputs; `module(targets=..., **inputs)`: the objective's summed losses."""

    def __init__(self, model: torch.nn.Module, objective: Objective, fast_loss: bool):
        super().__init__()
        self.model = model
        self.objective = objective
        self.fast_loss = fast_loss and objective.fast_loss_sums is not None

    def forward(self, targets: dict[str, torch.Tensor] | None = None, **inputs: torch.Tensor) -> Any:
        if targets is None:
            return self.model(**inputs)
        batch = Batch(inputs, targets)
        sums = self.objective.fast_loss_sums(self.model, batch) if self.fast_loss else None  # type: ignore[misc]
        return sums if sums is not None else self.objective.loss_sums(self.model(**inputs), batch)


@dataclass
class SaveableModel:
    """What `save_pretrained` writes: the model's config with these (full, gathered) weights."""

    model: Any
    state_dict: dict[str, torch.Tensor] | None  # None: the model's own weights
    config_only: bool = False  # a sharded checkpoint: the weights are in its shards

    def save_pretrained(self, directory: Path) -> None:
        if self.config_only:
            self.model.config.save_pretrained(directory)
        elif self.state_dict is None:
            self.model.save_pretrained(directory)
        else:
            self.model.save_pretrained(directory, state_dict=self.state_dict)


@dataclass
class ParallelModel:
    model: torch.nn.Module  # the HF model (under fsdp its parameters are DTensor shards)
    module: torch.nn.Module  # what the loop calls: ObjectiveModule, wrapped for ddp/fsdp
    cluster: Cluster
    strategy: Strategy
    device: torch.device
    sharded_checkpoints: bool = False  # checkpoints hold each rank's shards (torch.distributed.checkpoint)
    adapters: Any = None  # training.lora's seqlm.models.lora.Adapters: merged() saved as the model, adapter_only() in checkpoints

    @property
    def lockstep(self) -> bool:
        """Every forward pass is a collective: all ranks must make the same calls (FSDP)."""
        return self.strategy == "fsdp"

    @contextmanager
    def gradient_sync(self, enabled: bool) -> Iterator[None]:
        """Around forward and backward: no gradient exchange for micro-batches before a step's last."""
        if enabled or self.strategy == "single":
            yield
        elif self.strategy == "ddp":
            with self.module.no_sync():  # type: ignore[operator]
                yield
        else:
            self.module.set_requires_gradient_sync(False)  # type: ignore[operator]
            try:
                yield
            finally:
                self.module.set_requires_gradient_sync(True)  # type: ignore[operator]

    def saveable(self, for_checkpoint: bool = False) -> SaveableModel:
        """The model with its full weights; a collective under fsdp (every rank calls it; rank 0 gets them).
        `for_checkpoint` with sharded checkpoints: only the config (the weights go into the shards).
        With `adapters` (training.lora): the merged model, or for a checkpoint the adapters alone."""
        if self.adapters is not None:
            return self._saveable_adapters(for_checkpoint)
        if for_checkpoint and self.sharded_checkpoints:
            return SaveableModel(self.model, None, config_only=True)
        if self.strategy != "fsdp":
            return SaveableModel(self.model, None)
        # Tied weights (GPT-2's output layer is its input embedding) come back as separate copies:
        # keep the first name of each, as save_pretrained does for an unsharded model.
        repeated = _repeated_names(self.model)
        return SaveableModel(self.model, {key: value for key, value in self._gathered().items() if key not in repeated})

    def _saveable_adapters(self, for_checkpoint: bool) -> SaveableModel:
        """Under fsdp rank 0 gets the weights gathered from the shards: for a checkpoint only the trained ones
        (the adapters are saved whole even with sharded checkpoints: they are small); other ranks write nothing."""
        weights = self._gathered(trained_only=for_checkpoint) if self.strategy == "fsdp" else None
        if weights is not None and not self.cluster.is_main:
            return SaveableModel(self.model, None)  # never written (on_main)
        return SaveableModel(self.adapters.adapter_only(weights) if for_checkpoint else self.adapters.merged(weights), None)

    def _gathered(self, trained_only: bool = False) -> dict[str, torch.Tensor]:
        """The full weights (`trained_only`: those with requires_grad) gathered on rank 0, keyed as in the HF
        model; empty on the other ranks (a collective)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=trained_only)
        return {key.removeprefix(_INNER): value for key, value in get_model_state_dict(self.module, options=options).items()}

    def loop_state_dict(self, state: LoopState) -> dict[str, Any]:
        """`state.state_dict()` with the full optimizer state and each rank's RNG state (a collective)."""
        saved = state.state_dict()
        if self.sharded_checkpoints:
            del saved["optimizer"]  # in the shards, with the weights (save_shards)
            saved["sharded"] = True
        elif self.strategy == "fsdp":
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            saved["optimizer"] = get_optimizer_state_dict(self.module, state.optimizer, options=options)
        if self.cluster.distributed:
            saved["rank_rng"] = self.cluster.gather(saved["rng"])
        saved["world_size"] = self.cluster.world_size
        saved["strategy"] = self.strategy
        return saved

    def load_loop_state(self, state: LoopState, saved: dict[str, Any], checkpoint: Path) -> None:
        """Restore `state` from `loop_state_dict`'s output, on every rank."""
        on_main(self.cluster, lambda: self._check_resumable(saved, checkpoint))  # one message, from rank 0
        saved = dict(saved)
        if self.cluster.distributed:
            saved["rng"] = saved["rank_rng"][self.cluster.rank]
        if saved.get("sharded"):
            state.load_state_dict(saved, optimizer=False)
            self.load_shards(checkpoint / SHARDED, state.optimizer)
            return
        if self.strategy != "fsdp":
            state.load_state_dict(saved)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        optimizer_state = saved.pop("optimizer")
        state.load_state_dict(saved, optimizer=False)
        set_optimizer_state_dict(
            self.module, state.optimizer, optimizer_state, options=StateDictOptions(full_state_dict=True)
        )

    def _check_resumable(self, saved: dict[str, Any], checkpoint: Path) -> None:
        world_size = int(saved.get("world_size", 1))
        if world_size != self.cluster.world_size:
            raise ConfigError(
                f"{checkpoint} was written by a run of {world_size} process(es), and this run has "
                f"{self.cluster.world_size}: the global batch (per-device batch x grad_accum x processes) would change; "
                f"resume with {world_size} (--nproc {world_size}, or torchrun with {world_size} in all)"
            )
        strategy = saved.get("strategy", "single")
        if self.cluster.distributed and strategy != self.strategy:
            raise ConfigError(f"{checkpoint} was written under distributed.strategy {strategy}; resume with the same strategy")

    def save_shards(self, directory: Path, optimizer: torch.optim.Optimizer) -> None:
        """Each rank writes its shards of the weights and optimizer state (a collective: torch.distributed.checkpoint);
        with adapters, of the trained weights only (the frozen ones are the base model's)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optimizer_state = get_state_dict(self.module, optimizer, options=self._shard_options())
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=directory)

    def load_shards(self, directory: Path, optimizer: torch.optim.Optimizer) -> None:
        """Read this rank's shards of the weights and optimizer state back (a collective)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        options = self._shard_options()
        model_state, optimizer_state = get_state_dict(self.module, optimizer, options=options)
        loaded = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(loaded, checkpoint_id=directory)
        set_state_dict(self.module, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optimizer"], options=options)

    def _shard_options(self) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        trained_only = self.adapters is not None
        return StateDictOptions(ignore_frozen_params=trained_only, strict=not trained_only)

    def seed_dropout(self, seed: int) -> None:
        """After the model is built (identically on every rank): each rank its own dropout stream."""
        if self.cluster.distributed:
            torch.manual_seed(int(np.random.SeedSequence([seed, self.cluster.rank]).generate_state(1)[0]))


def parallelize(
    model: torch.nn.Module,
    objective: Objective,
    fast_loss: bool,
    cluster: Cluster,
    strategy: str,
    device: torch.device,
    sharded_checkpoints: bool = False,
    adapters: Any = None,
) -> ParallelModel:
    """Wrap `model` (already on `device`) for the loop: as it is in a single process, else ddp or fsdp.
    `adapters`: training.lora's, attached to `model`."""
    module = ObjectiveModule(model, objective, fast_loss)
    if not cluster.distributed:
        return ParallelModel(model, module, cluster, "single", device, adapters=adapters)
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        # No buffers to sync at every forward pass (no batch norm; position ids are constant).
        wrapped = DistributedDataParallel(
            module, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False
        )
        return ParallelModel(model, wrapped, cluster, "ddp", device, adapters=adapters)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if adapters is not None:
        adapters.keep_layout()  # to merge the adapters into the weights gathered from the shards
    mesh = init_device_mesh(device.type, (cluster.world_size,))
    blocks = set(getattr(model, "_no_split_modules", None) or [])
    tied = _tied_parameters(model)
    for submodule in model.modules():
        # A block holding a tied weight (BERT's embeddings, tied to its output layer) stays with the root.
        if type(submodule).__name__ in blocks and not any(id(param) in tied for param in submodule.parameters()):
            fully_shard(submodule, mesh=mesh)
    fully_shard(module, mesh=mesh)  # the rest: embeddings, final norm, heads
    return ParallelModel(model, module, cluster, "fsdp", device, sharded_checkpoints, adapters)


def _repeated_names(model: torch.nn.Module) -> set[str]:
    """The names of tied parameters after their first (GPT-2's `lm_head.weight`, the input embedding's)."""
    seen: set[int] = set()
    repeated: set[str] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            repeated.add(name)
        seen.add(id(param))
    return repeated


def _tied_parameters(model: torch.nn.Module) -> set[int]:
    """ids of the parameters registered under more than one name."""
    repeated = _repeated_names(model)
    return {id(param) for name, param in model.named_parameters(remove_duplicate=False) if name in repeated}


def global_batch_line(per_device: int, grad_accum: int, cluster: Cluster, strategy: Strategy) -> str:
    """How the global batch comes about, for the run's first log line (the learning rate is never rescaled for it)."""
    processes = f"{cluster.world_size} processes ({strategy})" if cluster.distributed else "1 process"
    return f"global batch = {per_device} per device x {grad_accum} accumulation x {processes} = {per_device * grad_accum * cluster.world_size}"
