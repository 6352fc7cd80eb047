"""``TrainingMonitor``: the curves a researcher reads first, and progress lines when no one watches a terminal.

Logged every ``log_every_n_steps`` optimizer steps (the trainer's setting): ``train/lr`` of each
parameter group (``train/lr`` for the first, ``train/lr_<i>`` for the others), ``train/grad_norm``
(the global 2-norm before clipping), ``train/tokens_per_s`` (real tokens, padding excluded, over the
wall time since the last log; only for batches of tokens) and ``train/step_time_s``. When standard output is not a terminal
(a log file, SLURM, nohup, CI), where Lightning's progress bar prints nothing, one line per log:
``step 40/200 (20%) loss 0.0123 lr 2.0e-05 1,234 tokens/s eta 3.1 min``. ``LitBlockCLI`` adds this
callback to every trainer.
"""

from __future__ import annotations

import sys
import time

import lightning as L
import torch


class TrainingMonitor(L.Callback):
    def __init__(self, progress_lines: bool | None = None):
        """``progress_lines``: print a line per log step; ``None``: only when standard output is not a terminal."""
        self.progress_lines = progress_lines
        self._tokens = 0
        self._since: float | None = None
        self._start_step = 0
        self._printed_step = -1  # with gradient accumulation several batches end at one optimizer step

    def on_train_start(self, trainer, pl_module) -> None:
        self._since, self._start_step, self._tokens = time.perf_counter(), trainer.global_step, 0
        if self.progress_lines is None:
            self.progress_lines = not sys.stdout.isatty()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        mask = batch.get("attention_mask") if isinstance(batch, dict) else None
        if mask is not None:
            self._tokens += int(mask.sum())  # one small host read per step, next to a whole forward pass
        elif isinstance(batch, dict) and "input_ids" in batch:
            self._tokens += batch["input_ids"].numel()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if not self._due(trainer):
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads:  # before clipping: what the step would have been
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        for i, group in enumerate(optimizer.param_groups):
            pl_module.log("train/lr" if i == 0 else f"train/lr_{i}", float(group["lr"]), on_step=True, on_epoch=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._due(trainer, after_step=True) or trainer.global_step in (self._printed_step, 0):
            return
        self._printed_step = trainer.global_step
        now = time.perf_counter()
        steps = max(1, trainer.global_step - self._start_step)
        seconds = now - self._since
        rate = self._tokens / seconds if seconds > 0 and self._tokens else None  # None: batches without tokens
        speed = {"train/step_time_s": seconds / steps, **({"train/tokens_per_s": rate} if rate is not None else {})}
        pl_module.log_dict(speed, on_step=True, on_epoch=False)
        if self.progress_lines and trainer.is_global_zero:
            self._print(trainer, outputs, rate, seconds / steps)
        self._since, self._start_step, self._tokens = now, trainer.global_step, 0

    @staticmethod
    def _due(trainer, after_step: bool = False) -> bool:
        step = trainer.global_step - (1 if after_step else 0)  # after the optimizer step the counter has moved on
        return step % max(1, trainer.log_every_n_steps) == 0

    @staticmethod
    def _print(trainer, outputs, rate: float | None, step_time: float) -> None:
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else trainer.estimated_stepping_batches
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        done = trainer.global_step
        eta = (total - done) * step_time / 60 if total and total != float("inf") else float("nan")
        share = f" ({100 * done / total:.0f}%)" if total and total != float("inf") else ""
        loss_text = f" loss {float(loss):.4g}" if loss is not None else ""
        speed = f" {rate:,.0f} tokens/s" if rate is not None else ""
        print(f"step {done}/{total}{share}{loss_text} lr {lr:.2g}{speed} eta {eta:.1f} min", flush=True)
