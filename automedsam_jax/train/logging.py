"""What a user sees: a progress bar (loss, img/s, ETA) and TensorBoard event files (tensorboardX:
``train/<loss terms>``, ``train/lr``, ``train/img_per_s`` and, where the chip's peak is known,
``train/mfu`` as a fraction). Only process 0 writes."""

from __future__ import annotations

import sys

import jax


class Logger:
    def __init__(self, logdir: str, total_steps: int, initial_step: int, progress: bool = True):
        self.main = jax.process_index() == 0
        self.writer = self.bar = None
        if self.main:
            from tensorboardX import SummaryWriter
            self.writer = SummaryWriter(logdir)
            if progress:
                from tqdm import tqdm
                self.bar = tqdm(total=total_steps, initial=initial_step, unit="step",
                                dynamic_ncols=True, file=sys.stderr)

    def info(self, msg: str) -> None:
        if not self.main:
            return
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def step(self, step: int, scalars: dict[str, float], imgs_per_s: float,
             mfu: float | None = None) -> None:
        if not self.main:
            return
        for k, v in scalars.items():
            self.writer.add_scalar(f"train/{k}", v, step)
        if imgs_per_s:  # 0: the compiling step
            self.writer.add_scalar("train/img_per_s", imgs_per_s, step)
        if mfu is not None:
            self.writer.add_scalar("train/mfu", mfu, step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{scalars['loss']:.4f}", img_s=f"{imgs_per_s:.1f}",
                                 refresh=False)
            self.bar.update(1)

    def scalars(self, step: int, scalars: dict[str, float], prefix: str) -> None:
        if self.main:
            for k, v in scalars.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, step)
            self.writer.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
