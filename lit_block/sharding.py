"""FSDP2 for block distillation: teacher and student sharded per decoder layer with ``fully_shard``.

Used from a LightningModule's ``configure_model`` under Lightning's ``ModelParallelStrategy`` (which
sets ``self.device_mesh``)::

    shard_block_lm(self.student, mesh, ShardingConfig(activation_checkpointing=True))
    shard_block_lm(self.teacher, mesh, ShardingConfig(), frozen=True)

* Each decoder layer (the classes a transformers model lists in ``_no_split_modules``) is one FSDP
  unit; the rest -- embeddings, final norm, output head, the sink embeddings -- is the root unit of
  each model, so the teacher's units are its own and tied input/output embeddings stay together.
* The root keeps its parameters gathered after the forward pass (``reshard_after_forward=False``):
  the distillation loss projects hidden states with the output head outside the model's forward.
* ``BlockAttentionLM``'s entry points that read parameters (``hidden_states_for_layout``,
  ``full_attention_hidden_states``) are registered as FSDP forward methods, so
  calling them gathers the root's shards like ``forward`` does.
* Mixed precision: parameters computed in ``param_dtype`` (bf16 by default), gradients reduced in
  ``reduce_dtype`` (fp32); the optimizer keeps fp32 shards.
* Activation checkpointing (student only): decoder layers recompute their activations in the backward
  pass (transformers' own gradient checkpointing, non-reentrant); every layer by default, or a share of
  them, evenly spaced, to trade the memory left over for less recomputation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
FORWARD_METHODS = ("hidden_states_for_layout", "full_attention_hidden_states")


@dataclass(frozen=True)
class ShardingConfig:
    param_dtype: str = "bfloat16"  # compute dtype of gathered parameters
    reduce_dtype: str = "float32"  # gradient reduce-scatter dtype
    # student decoder layers that recompute activations in backward: True (all), False (none) or a share in [0, 1]
    activation_checkpointing: bool | float = True
    reshard_after_forward: bool = True  # decoder layers free their gathered parameters after forward

    def __post_init__(self):
        for name in ("param_dtype", "reduce_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{name} {getattr(self, name)!r} is not one of {', '.join(DTYPES)}")
        if not 0 <= float(self.activation_checkpointing) <= 1:
            raise ValueError(f"activation_checkpointing {self.activation_checkpointing!r} is not true, false or a "
                             "share of the decoder layers in [0, 1]")


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The decoder layers of a transformers model: instances of the classes in ``_no_split_modules``."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if any(c.__name__ in names for c in type(m).__mro__)]  # FSDP subclasses too
    if not layers:
        raise ValueError(f"{type(model).__name__} names no decoder layer class in _no_split_modules "
                         f"({sorted(names) or 'none'}); it cannot be sharded per layer")
    return layers


def checkpointed_layers(n_layers: int, share: float) -> list[bool]:
    """Which of ``n_layers`` decoder layers recompute their activations: ``floor(share * n_layers)`` of them, evenly
    spaced (layer ``i`` where ``floor((i + 1) * share)`` steps up), so the memory they free is spread over the depth."""
    share = float(share)
    return [int((i + 1) * share + 1e-9) > int(i * share + 1e-9) for i in range(n_layers)]


def set_activation_checkpointing(model: nn.Module, share: bool | float) -> None:
    """Activation checkpointing on a share of a transformers model's decoder layers (True: all, False: none)."""
    if not share:
        model.gradient_checkpointing_disable()
        return
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = decoder_layers(model)
    for layer, on in zip(layers, checkpointed_layers(len(layers), share)):
        layer.gradient_checkpointing = on  # transformers' per-layer switch (GradientCheckpointingLayer)


def data_parallel_mesh(mesh):
    """The data-parallel dimension of Lightning's ModelParallelStrategy mesh (the whole mesh if it has no names)."""
    names = getattr(mesh, "mesh_dim_names", None) or ()
    return mesh["data_parallel"] if "data_parallel" in names else mesh


def shard_block_lm(lm, mesh, config: ShardingConfig = ShardingConfig(), frozen: bool = False) -> list[nn.Module]:
    """Apply FSDP2 to a ``BlockAttentionLM`` in place; returns the FSDP units, decoder layers first, root last."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    policy = MixedPrecisionPolicy(param_dtype=DTYPES[config.param_dtype], reduce_dtype=DTYPES[config.reduce_dtype])
    if config.activation_checkpointing and not frozen:
        set_activation_checkpointing(lm.model, config.activation_checkpointing)
    units = decoder_layers(lm.model)
    for layer in units:
        fully_shard(layer, mesh=mesh, mp_policy=policy, reshard_after_forward=config.reshard_after_forward)
    fully_shard(lm, mesh=mesh, mp_policy=policy, reshard_after_forward=False)
    for method in FORWARD_METHODS:
        register_fsdp_forward_method(lm, method)
    return [*units, lm]


def fsdp2_strategy_class():
    """``FSDP2Strategy``, built on first use (importing Lightning's strategies is slow)."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    class FSDP2Strategy(ModelParallelStrategy):
        """Lightning's ``ModelParallelStrategy`` as plain FSDP2: one data-parallel mesh over every rank of every node
        (no tensor parallelism), whatever the number of devices and nodes; sharded checkpoints by default."""

        def __init__(self, save_distributed_checkpoint: bool = True, process_group_backend: str | None = None):
            super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                             save_distributed_checkpoint=save_distributed_checkpoint,
                             process_group_backend=process_group_backend)

        def setup_environment(self) -> None:
            self._data_parallel_size = self.num_nodes * self.num_processes  # the world size
            super().setup_environment()

    return FSDP2Strategy
