"""The one Trainer: a method-agnostic loop around ``loss, logs = objective(model, batch)``.

The Trainer knows nothing about methods. It moves batches (dicts of tensors) to the device,
runs the objective under bf16 autocast on CUDA, clips gradients, steps AdamW and a per-step
schedule, validates, calls the objective's optional hooks, logs to ``metrics.jsonl``, keeps the
top-k checkpoints and writes a resumable ``last.pt`` at epoch boundaries. Under ``torchrun``
it wraps the model in ``DistributedDataParallel`` and only rank 0 writes files.

Resuming is exact: ``last.pt`` holds the model, objective, optimiser and scheduler states, the
history and the RNG states (torch, CUDA, NumPy, Python), and loaders draw their shuffling
from those RNGs or from ``(seed, epoch)`` samplers, so a run stopped after epoch ``k`` and
resumed ends with the same weights as one that was never stopped (CPU, deterministic kernels).

Objective hooks (called when present):

- ``on_step_end(model, step, total_steps)`` after each optimiser step (``step`` counts the
  steps done, from 1),
- ``on_epoch_end(model, epoch, val_logs)`` after validation (``epoch`` counts the epochs done,
  from 1; ``val_logs`` holds the ``val_*`` values of that epoch, empty without a val loader).

Both get the unwrapped model. State an objective changes there (EMA teachers, loss weights)
must live in its ``state_dict`` (parameters, buffers or ``get_extra_state``) to be resumed.

No host synchronisation per step: the loss, the gradient norm and the objective's logs (Python
numbers or 0-d tensors; tensors are preferred, as ``float(tensor)`` in an objective waits for
the GPU) are summed on the device and read back only every ``cfg.log_every`` steps and at the
end of the epoch, where a non-finite loss is also reported (with the step it first occurred).
Batches are copied with ``non_blocking=True`` on CUDA, which overlaps the copy with compute
when the loader pins memory (``DataLoader(pin_memory=True)``).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import TrainConfig
from ..utils import atomic_write_text, check_positive, get_logger, seed_everything
from .checkpoints import (
    TopKCheckpoints,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
)
from .distributed import all_reduce_sum, average_gradients, barrier, init_distributed
from .loop import (
    Batch,
    _as_floats,
    _JsonlLog,
    _plain,
    _StepSums,
    batch_size,
    move_to_device,
    rng_state,
    set_loader_epoch,
    set_rng_state,
)
from .optim import build_optimizer, build_scheduler

logger = get_logger("training")

__all__ = ["Trainer", "batch_size", "move_to_device", "rng_state", "set_loader_epoch",
           "set_rng_state"]


# ----------------------------------------------------------------------------- trainer
class Trainer:
    """Train ``model`` with ``objective`` under ``cfg``; write logs and checkpoints to ``out_dir``.

    Parameters
    ----------
    model : nn.Module
        The model (moved to the device here).
    objective : callable
        ``loss, logs = objective(model, batch)``; usually an ``nn.Module`` (moved to the device,
        its trainable parameters optimised with ``cfg.lr`` unless in ``param_groups``, its
        state checkpointed).
    cfg : TrainConfig
        Optimisation settings.
    out_dir : path
        Run folder: ``last.pt``, ``top/epochNNN.pt``, ``metrics.jsonl``, ``history.csv``.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda[:N]"`` (under torchrun: ``cuda:LOCAL_RANK`` or the CPU).
    param_groups : list of dict or callable, optional
        Optimiser groups (see :func:`workbench.training.optim.build_optimizer`), e.g. from
        :func:`~workbench.training.optim.make_param_groups` for differential learning rates.
    model_spec : dict, optional
        ``{"name", "preset", "overrides"}`` of :func:`workbench.models.create_model`, stored in
        checkpoints so :func:`~workbench.training.checkpoints.build_model_from_checkpoint` can
        rebuild the model.
    val_metrics : callable, optional
        ``val_metrics(model, val_loader) -> dict`` of extra validation values (e.g. accuracy);
        keys are prefixed with ``val_`` unless they already are.

    Attributes
    ----------
    history : list of dict
        One row per epoch (also returned by :meth:`fit` as a DataFrame).
    top_k : TopKCheckpoints
        The keeper of the best checkpoints (``top_k.best_paths()``).
    """

    def __init__(self, model: nn.Module, objective: Callable[..., Any], cfg: TrainConfig,
                 out_dir: str | Path, device: str = "auto",
                 param_groups: list[dict[str, Any]] | Callable[[nn.Module], list[dict[str, Any]]]
                 | None = None,
                 model_spec: dict[str, Any] | None = None,
                 val_metrics: Callable[[nn.Module, Any], dict[str, float]] | None = None):
        if not isinstance(cfg, TrainConfig):
            raise TypeError(f"Invalid value for the 'cfg' parameter: expected a TrainConfig, got "
                            f"{type(cfg).__name__}.")
        if model_spec is not None and (not isinstance(model_spec, Mapping)
                                       or not isinstance(model_spec.get("name"), str)):
            raise ValueError("Invalid value for the 'model_spec' parameter: expected a dict "
                             f"{{'name': str, 'preset': str, 'overrides': dict}}, got {model_spec!r}.")
        check_positive("cfg.epochs", cfg.epochs)
        check_positive("cfg.checkpoint_every", cfg.checkpoint_every)
        if cfg.early_stopping is not None:
            check_positive("cfg.early_stopping", cfg.early_stopping)
        self.cfg = cfg
        self.dist, self.device = init_distributed(device)
        self.out_dir = Path(out_dir)
        self.model = model.to(self.device)
        self.objective = objective.to(self.device) if isinstance(objective, nn.Module) else objective
        self.param_groups = param_groups
        self.model_spec = None if model_spec is None else {
            "name": model_spec["name"], "preset": model_spec.get("preset"),
            "overrides": dict(model_spec.get("overrides") or {})}
        self.val_metrics = val_metrics
        self.top_k = TopKCheckpoints(cfg.keep_top_k, cfg.monitor, cfg.monitor_mode,
                                     self.out_dir / "top")
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.global_step = 0
        self.total_steps = 0
        self._told_no_val = False
        self.optimizer: torch.optim.Optimizer | None = None
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.net: nn.Module = self.model  # what the objective calls (DDP wrapper when distributed)
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Objectives may leave parts of the model unused (a classification head while
            # pre-training), so DDP must look for unused parameters.
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids,
                                                           find_unused_parameters=True)

    # ------------------------------------------------------------------ properties
    @property
    def is_main(self) -> bool:
        """Whether this process writes files (rank 0)."""
        return self.dist.is_main

    @property
    def last_path(self) -> Path:
        """The resumable checkpoint ``out_dir/last.pt``."""
        return self.out_dir / "last.pt"

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """bf16 on CUDA for ``amp`` in (auto, bf16); on the CPU only for ``amp="bf16"``."""
        if self.cfg.amp == "none":
            return None
        if self.device.type == "cuda":
            if self.cfg.amp == "auto" and not torch.cuda.is_bf16_supported():
                return None  # pre-Ampere GPUs emulate bf16 slowly; fp32 is the safe default
            return torch.bfloat16
        return torch.bfloat16 if self.cfg.amp == "bf16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of forward passes."""
        dtype = self.amp_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def steps_per_epoch(self, loader: Iterable) -> int:
        """``len(loader)`` capped by ``cfg.max_steps_per_epoch``."""
        try:
            n = len(loader)  # type: ignore[arg-type]
        except TypeError:
            n = None
        cap = self.cfg.max_steps_per_epoch
        if n is None and cap is None:
            raise ValueError("The training loader has no len(); set "
                             "TrainConfig.max_steps_per_epoch.")
        steps = min(n, cap) if (n is not None and cap is not None) else (n if n is not None else cap)
        if not steps or steps < 1:
            raise ValueError(f"The training loader yields no batch (len {n}, "
                             f"max_steps_per_epoch {cap}).")
        return int(steps)

    def _trainable_objective_params(self) -> list[nn.Parameter]:
        if isinstance(self.objective, nn.Module):
            return [p for p in self.objective.parameters() if p.requires_grad]
        return []

    # ------------------------------------------------------------------ fit
    def fit(self, train_loader: Iterable[Batch], val_loader: Iterable[Batch] | None = None,
            resume: bool = True) -> pd.DataFrame:
        """Train for ``cfg.epochs`` epochs, continuing from ``out_dir/last.pt`` when ``resume``.

        Returns
        -------
        history : DataFrame
            One row per epoch: ``epoch``, ``step``, the sample-weighted means of ``loss`` and of
            every key the objective logs (and ``grad_norm`` when clipping), ``val_*``, ``lr``
            (the rate of the last step of the epoch, first parameter group), ``seconds`` and
            ``samples_per_s``. Also written to ``out_dir/history.csv``.
        """
        cfg = self.cfg
        spe = self.steps_per_epoch(train_loader)
        self.total_steps = total = cfg.epochs * spe
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(self.out_dir)
            remove_stale_temp_files(self.top_k.folder)
        seed_everything(cfg.seed + self.dist.rank, deterministic=cfg.deterministic)
        self.optimizer = build_optimizer(self.model, cfg, self.param_groups,
                                         extra_params=self._trainable_objective_params())
        self.scheduler = build_scheduler(self.optimizer, cfg, total)
        self.history, self.epoch, self.global_step = [], 0, 0
        self.top_k.entries = []
        if resume and self.last_path.is_file():
            self._restore(self.last_path, total)
        elif self.last_path.is_file():
            logger.info("resume=False: starting afresh; %s will be overwritten.", self.last_path)
        if self.is_main:
            self.top_k.prune_untracked()
        if self.epoch >= cfg.epochs or self._stopped_early():
            logger.info("Nothing to do: %s already holds %d of %d epochs%s.", self.last_path,
                        self.epoch, cfg.epochs,
                        " (stopped early)" if self.epoch < cfg.epochs else "")
            return self._finish()

        # A fresh run starts a fresh log; a resumed one appends (after a "resume" line).
        log = _JsonlLog(self.out_dir / "metrics.jsonl" if self.is_main else None,
                        append=self.epoch > 0)
        log.write("resume" if self.epoch else "start", epoch=self.epoch, step=self.global_step,
                  total_steps=total, steps_per_epoch=spe, world_size=self.dist.world_size)
        try:
            for epoch in range(self.epoch, cfg.epochs):
                t0 = time.perf_counter()
                set_loader_epoch(train_loader, epoch)
                train_logs, n_samples, lr = self._train_epoch(train_loader, epoch, spe, log)
                t_train = time.perf_counter() - t0
                val_logs = self.evaluate(val_loader) if val_loader is not None else {}
                hook = getattr(self.objective, "on_epoch_end", None)
                if callable(hook):
                    hook(self.model, epoch + 1, dict(val_logs))
                row = {"epoch": epoch + 1, "step": self.global_step, **train_logs, **val_logs,
                       "lr": lr, "seconds": time.perf_counter() - t0,
                       "samples_per_s": n_samples / max(t_train, 1e-9)}
                self.history.append(row)
                self.epoch = epoch + 1
                log.write("epoch", **row)
                self._update_top_k(row, val_loader is not None)
                if self.is_main and (self.epoch % cfg.checkpoint_every == 0
                                     or self.epoch == cfg.epochs):
                    save_checkpoint(self.last_path, self._payload(kind="last"))
                barrier()
                logger.info("epoch %d/%d: %s", self.epoch, cfg.epochs, ", ".join(
                    f"{k}={v:.4g}" for k, v in row.items() if k not in ("epoch", "step")))
                if self._stopped_early():
                    if self.is_main and self.epoch % cfg.checkpoint_every:
                        save_checkpoint(self.last_path, self._payload(kind="last"))
                    log.write("early_stop", epoch=self.epoch, monitor=cfg.monitor)
                    logger.info("early stop after epoch %d: no better %s for %d epochs.",
                                self.epoch, cfg.monitor, cfg.early_stopping)
                    break
        except BaseException:
            logger.warning("Training stopped during epoch %d (step %d); %s resumes from its last "
                           "checkpoint.", self.epoch + 1, self.global_step, self.last_path)
            raise
        finally:
            log.close()
        return self._finish()

    def _finish(self) -> pd.DataFrame:
        df = pd.DataFrame(self.history)
        if self.is_main and len(df):
            atomic_write_text(self.out_dir / "history.csv", df.to_csv(index=False))
        return df

    def _train_epoch(self, loader: Iterable[Batch], epoch: int, spe: int,
                     log: _JsonlLog) -> tuple[dict[str, float], int, float]:
        cfg, opt, sched = self.cfg, self.optimizer, self.scheduler
        assert opt is not None and sched is not None
        self.net.train()
        if isinstance(self.objective, nn.Module):
            self.objective.train()
        params = [p for g in opt.param_groups for p in g["params"]]
        obj_params = self._trainable_objective_params()
        step_hook = getattr(self.objective, "on_step_end", None)
        acc = _StepSums()
        lr = opt.param_groups[0]["lr"]
        bar = tqdm(total=spe, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=not (cfg.progress and self.is_main), dynamic_ncols=True)
        try:
            it = iter(loader)
            for i in range(spe):
                try:
                    batch = next(it)
                except StopIteration:
                    logger.warning("The training loader ended after %d of %d steps in epoch %d; "
                                   "the schedule assumed %d.", i, spe, epoch + 1, spe)
                    break
                batch = move_to_device(batch, self.device)
                n = batch_size(batch)
                lr = opt.param_groups[0]["lr"]
                with self.autocast():
                    loss, logs = self.objective(self.net, batch)
                # Values stay on the device (no .item() / float(tensor) per step): see the
                # module docstring; they are read at logging intervals and at the epoch end.
                acc.watch(loss, self.global_step + 1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if self.dist.enabled and obj_params:
                    average_gradients(obj_params)
                step_logs = {"loss": loss.detach()}
                step_logs.update({k: v for k, v in (logs or {}).items() if k != "loss"})
                if cfg.grad_clip:
                    step_logs["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                sched.step()
                self.global_step += 1
                if callable(step_hook):
                    step_hook(self.model, self.global_step, self.total_steps)
                acc.add(step_logs, n)
                bar.update(1)
                if self.global_step % max(1, cfg.log_every) == 0:
                    values = _as_floats(step_logs)  # host reads only at logging intervals
                    acc.check_finite(epoch + 1, values)
                    bar.set_postfix(loss=f"{values['loss']:.4g}", lr=f"{lr:.3g}")
                    log.write("step", epoch=epoch + 1, step=self.global_step, lr=lr, **values)
        finally:
            bar.close()
        acc.check_finite(epoch + 1)
        means, n_total = self._reduce_means(acc)
        return means, n_total, lr

    def _reduce_means(self, acc: _StepSums) -> tuple[dict[str, float], int]:
        """Sample-weighted means over every rank (a key counts the samples it was logged for).

        The sums are read from the device here, once per epoch (one all-reduce under torchrun).
        """
        keys = sorted(acc.sums)
        if self.dist.enabled:
            parts = [torch.as_tensor(acc.sums[k], dtype=torch.float64, device=self.device)
                     for k in keys]
            parts += [torch.tensor([acc.counts[k] for k in keys] + [float(acc.n)],
                                   dtype=torch.float64, device=self.device)]
            t = torch.cat([p.reshape(-1) for p in parts])
            all_reduce_sum(t)
            vals = t.tolist()
            m = len(keys)
            sums, counts = dict(zip(keys, vals[:m])), dict(zip(keys, vals[m:2 * m]))
            n = int(vals[-1])
        else:
            sums, counts, n = _as_floats(acc.sums), acc.counts, acc.n
        order = ["loss"] + [k for k in keys if k != "loss"] if "loss" in sums else keys
        return {k: sums[k] / max(counts[k], 1.0) for k in order}, n

    @torch.no_grad()
    def evaluate(self, loader: Iterable[Batch]) -> dict[str, float]:
        """Validation: ``val_loss`` and ``val_<key>`` (sample-weighted means of the objective's
        loss and logs, eval mode, no gradients) plus ``val_metrics(model, loader)``."""
        model_was_training = self.net.training
        self.net.eval()
        obj_training = isinstance(self.objective, nn.Module) and self.objective.training
        if isinstance(self.objective, nn.Module):
            self.objective.eval()
        acc = _StepSums()
        try:
            for batch in loader:
                batch = move_to_device(batch, self.device)
                n = batch_size(batch)
                with self.autocast():
                    loss, logs = self.objective(self.net, batch)
                vals = {"loss": loss}
                vals.update({k: v for k, v in (logs or {}).items() if k != "loss"})
                acc.add(vals, n)  # on the device; read once below
            means, _ = self._reduce_means(acc)
            out = {f"val_{k}": v for k, v in means.items()}
            if self.val_metrics is not None:
                extra = self.val_metrics(self.model, loader)
                out.update({(k if k.startswith("val_") else f"val_{k}"): _plain(v)
                            for k, v in extra.items()})
        finally:
            self.net.train(model_was_training)
            if isinstance(self.objective, nn.Module):
                self.objective.train(obj_training)
        return out

    # ------------------------------------------------------------------ checkpoints
    def _stopped_early(self) -> bool:
        """Whether the last ``cfg.early_stopping`` epochs did not improve on the best monitored
        value before them. Derived from the history alone, so a resumed run that had stopped
        early stays stopped."""
        patience, monitor = self.cfg.early_stopping, self.cfg.monitor
        values = [r[monitor] for r in self.history if monitor in r]
        if not patience or len(values) <= patience:
            return False
        best = max if self.cfg.monitor_mode == "max" else min
        return best(values[:-patience]) == best(values)

    def _payload(self, kind: str) -> dict[str, Any]:
        base = {"kind": kind, "model": self.model.state_dict(), "epoch": self.epoch,
                "step": self.global_step, "train_config": asdict(self.cfg),
                "model_spec": self.model_spec,
                "metrics": dict(self.history[-1]) if self.history else {}}
        if kind == "top":
            return base
        assert self.optimizer is not None and self.scheduler is not None
        return {**base,
                "objective": (self.objective.state_dict()
                              if isinstance(self.objective, nn.Module) else {}),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "total_steps": self.total_steps,
                "history": [dict(r) for r in self.history],
                "top_k": self.top_k.state_dict(),
                "rng": rng_state(),
                "torch_version": str(torch.__version__)}

    def _update_top_k(self, row: dict[str, Any], has_val: bool) -> None:
        if self.top_k.k == 0:
            return
        monitor = self.cfg.monitor
        if monitor not in row:
            if not has_val and monitor.startswith("val_"):
                if not self._told_no_val:
                    logger.info("No validation loader: top-k checkpoints (monitor %r) are off.",
                                monitor)
                    self._told_no_val = True
                return
            raise KeyError(f"TrainConfig.monitor={monitor!r} is not among the logged values "
                           f"{sorted(row)}.")
        if self.is_main:
            self.top_k.update(self.epoch, row[monitor], lambda: self._payload(kind="top"))

    def _restore(self, path: Path, total: int) -> None:
        """Continue from ``path`` (model, objective, optimiser, scheduler, RNG, history)."""
        assert self.optimizer is not None and self.scheduler is not None
        ckpt = load_checkpoint(path, map_location="cpu")
        missing = [k for k in ("model", "optimizer", "scheduler", "epoch", "step", "rng")
                   if k not in ckpt]
        if missing:
            raise ValueError(f"Checkpoint {path} cannot resume a run: it lacks {missing} (a "
                             f"'{ckpt.get('kind', '?')}' checkpoint?).")
        saved_cfg = ckpt.get("train_config") or {}
        changed = {k: (saved_cfg[k], v) for k, v in asdict(self.cfg).items()
                   if k in saved_cfg and _norm(saved_cfg[k]) != _norm(v)}
        if changed:
            logger.warning("Resuming %s with a changed TrainConfig (saved, now): %s.", path, changed)
        self.model.load_state_dict(ckpt["model"])
        if isinstance(self.objective, nn.Module) and ckpt.get("objective"):
            self.objective.load_state_dict(ckpt["objective"])
        self.epoch, self.global_step = int(ckpt["epoch"]), int(ckpt["step"])
        self.history = [dict(r) for r in ckpt.get("history", [])]
        if ckpt.get("top_k"):
            self.top_k.load_state_dict(ckpt["top_k"])
        if self.epoch >= self.cfg.epochs:
            return
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except ValueError as e:
            raise ValueError(f"Checkpoint {path}: the optimiser state does not fit this model's "
                             f"parameter groups ({e}).") from None
        if int(ckpt.get("total_steps", -1)) == total:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        else:
            logger.warning("Run length changed from %s to %d steps: the learning-rate schedule "
                           "continues on the new length.", ckpt.get("total_steps"), total)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
                for _ in range(self.global_step):
                    self.scheduler.step()
        set_rng_state(ckpt["rng"])
        logger.info("Resumed from %s at epoch %d, step %d.", path, self.epoch, self.global_step)


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
