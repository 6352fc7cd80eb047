"""Training strategies for YAML configs: ``lit_block.strategies.FSDP2Strategy`` (see ``lit_block.sharding``)."""

from lit_block.sharding import fsdp2_strategy_class

FSDP2Strategy = fsdp2_strategy_class()

__all__ = ["FSDP2Strategy"]
