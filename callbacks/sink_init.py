"""``SinkTokenInitializer``: where the student's sink embeddings start.

* ``bos``: every sink is the BOS embedding (the sink the model already knows);
* ``mean``: the mean token embedding;
* ``warmup``: starting from ``bos``, a few Adam steps on the sinks alone so that the student's
  final hidden state at each block's first sink matches the teacher's at the sequence's first
  token (the state a real attention sink has).

Runs once at the start of a fresh fit (not on resume: the checkpoint holds the trained sinks).
"""

from __future__ import annotations

import lightning as L
import torch

from lit_block.errors import UsageError
from lit_block.layout import sink_slots

METHODS = ("bos", "mean", "warmup")


class SinkTokenInitializer(L.Callback):
    def __init__(self, method: str = "bos", warmup_steps: int = 20, warmup_lr: float = 1e-2):
        if method not in METHODS:
            raise UsageError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self.method, self.warmup_steps, self.warmup_lr = method, warmup_steps, warmup_lr

    def on_fit_start(self, trainer, pl_module) -> None:
        student = pl_module.student
        if trainer.ckpt_path or student.num_sink_tokens == 0:
            return
        embed = student.model.get_input_embeddings().weight
        with torch.no_grad():
            if self.method == "mean":
                student.sink_embeddings.copy_(embed.mean(0).expand_as(student.sink_embeddings))
            else:
                bos = student.config.bos_token_id
                row = embed[bos] if isinstance(bos, int) else embed.mean(0)
                student.sink_embeddings.copy_(row.expand_as(student.sink_embeddings))
        if self.method == "warmup":
            self.warm_up(pl_module, trainer.datamodule.train_dataloader())

    def warm_up(self, pl_module, loader) -> list[float]:
        """Fit the sinks to the teacher's first-token state; returns the loss per step."""
        student, teacher = pl_module.student, pl_module.teacher
        optimizer = torch.optim.Adam([student.sink_embeddings], lr=self.warmup_lr)
        losses = []
        batches = iter(loader)
        for _ in range(self.warmup_steps):
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(loader)
                batch = next(batches)
            batch = {k: v.to(pl_module.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            with torch.no_grad():
                target = teacher.full_attention_hidden_states(batch["input_ids"][:, :1])[:, 0]
            layout = student.layout(batch["input_ids"], batch["block_ids"], batch["attention_mask"])
            hidden = student.hidden_states_for_layout(layout)
            first_sink = sink_slots(layout) == 0  # each block's first sink slot
            states = hidden[first_sink]  # [n_blocks_total, H]
            rows = torch.nonzero(first_sink)[:, 0]
            loss = torch.nn.functional.mse_loss(states.float(), target[rows].float())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        student.model.zero_grad(set_to_none=True)  # the warm-up only moves the sinks
        return losses
