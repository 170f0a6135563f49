"""DiffusionModule: process + objective + network + EMA copy; the EMA weights are sampled and evaluated."""

from __future__ import annotations

import copy
import math
import warnings

import lightning.pytorch as pl
import torch
from torch import nn

from ..choices import check_choice
from ..objectives import NoisePredictionObjective
from ..processes.core import Process
from ..samplers import check_support
from .checkpointing import CheckpointMismatchError, check_identity, checkpoint_identity  # noqa: F401


def build_network(factory, order: int, data_shape: tuple[int, ...], out_blocks: int = 1) -> nn.Module:
    """Networks see all k blocks concatenated on channels (images) or features (vectors) and predict
    ``out_blocks`` blocks of ε (1, or k for the gDDIM noise factor)."""
    if len(data_shape) == 1:
        return factory(in_dim=order * data_shape[0], out_dim=out_blocks * data_shape[0])
    channels, height, _ = data_shape
    return factory(in_channels=order * channels, out_channels=out_blocks * channels, image_size=height)


def ema_decay_at(decay: float, step: int, warmup: bool) -> float:
    """The EMA decay of update ``step`` (0-based). With ``warmup`` it is min(decay, (1 + step) / (10 + step))
    (TensorFlow's ExponentialMovingAverage with num_updates): a constant decay d still holds d^n of the random
    initial weights after n updates (0.999^1000 = 37 %), the warmed-up one only ∏ (1 + i) / (10 + i) ≈ 10⁻⁷."""
    return min(decay, (1.0 + step) / (10.0 + step)) if warmup else decay


LR_SCHEDULES = ("constant", "cosine", "exponential")


def lr_factor(
    step: int, warmup_steps: int, schedule: str = "constant", total_steps: int | None = None, decay: float = 1.0
) -> float:
    """The learning rate of update ``step`` (0-based) as a fraction of optim.lr: a linear warm-up over
    ``warmup_steps``, then constant, a half cosine from 1 to 0 at ``total_steps`` (SGDR without restarts,
    Loshchilov & Hutter 2017: a short run ends at small steps, where the EMA averages out less noise), or
    ``decay`` per step after the warm-up (exponential; GDSS's ExponentialLR, γ per epoch = decay^(steps per epoch))."""
    warm = max(warmup_steps, 1)
    if step < warm or schedule == "constant":
        return min(1.0, (step + 1) / warm)
    if schedule == "exponential":
        return decay ** (step + 1 - warm)
    progress = min(1.0, (step + 1 - warm) / max(total_steps - warm, 1))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class DiffusionModule(pl.LightningModule):
    def __init__(
        self,
        process: Process,
        objective: NoisePredictionObjective,
        net_factory,
        data_shape: tuple[int, ...],
        sampler=None,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        lr_schedule: str = "constant",
        lr_decay: float = 1.0,
        clip_subnetworks: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        ema_decay: float = 0.999,
        ema_warmup: bool = False,
        max_bad_steps: int = 20,
        max_update_ratio: float = 1.0,
        channels_last: bool = True,
        compile: bool = False,
        identity: dict | None = None,
        config: dict | None = None,
    ):
        super().__init__()
        objective.check_process(process)
        if sampler is not None:
            check_support(sampler, process)
        self.process, self.objective, self.sampler = process, objective, sampler
        self.data_shape = tuple(data_shape)
        noise_factor = objective.noise_factor
        self.net = build_network(net_factory, process.order, self.data_shape, noise_factor.blocks(process))
        if channels_last and len(self.data_shape) == 3:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.train_net = torch.compile(self.net) if compile else self.net
        self.lr, self.weight_decay, self.warmup_steps, self.betas = lr, weight_decay, warmup_steps, tuple(betas)
        self.ema_decay, self.ema_warmup, self.max_bad_steps = ema_decay, bool(ema_warmup), max_bad_steps
        self.lr_schedule = check_choice("optim.lr_schedule", lr_schedule, LR_SCHEDULES)
        self.lr_decay, self.clip_subnetworks = float(lr_decay), bool(clip_subnetworks)
        self.max_update_ratio = max_update_ratio  # |Δθ| / |θ| above this: the update blew up (step undone)
        self.update_snapshot = UpdateSnapshot()
        self.allow_identity_change = False  # train.py sets it from allow_identity_change=true
        self.channels_last = channels_last and len(self.data_shape) == 3
        # What a checkpoint must match to be loaded under another config (checked on load).
        self.identity = dict(
            identity or {},
            process=process.name,
            order=process.order,
            objective=objective.name,
            kt=noise_factor.kind,  # a string: checkpoints before NoiseFactor compare equal
            data_shape=list(self.data_shape),
        )
        self.save_hyperparameters({"identity": self.identity, "config": config})
        self.register_buffer("bad_steps_total", torch.zeros((), dtype=torch.long))
        self.consecutive_bad_steps = 0
        self.last_good_step = 0  # global step after the last update that was kept

    # ---- models -------------------------------------------------------------------------------
    def score_model(self, ema: bool = True):
        if ema:  # never sample with dropout (it would also draw from the global RNG that drives training)
            self.ema.eval()
        return self.objective.score_model(self.ema if ema else self.train_net, self.process)

    def score_fn(self, ema: bool = True, observer=None):
        """The ScoreModel itself: callable as score_fn(z, t), and samplers may ask it for ε̂ (expint, through the
        samplers/base.py NoisePredictingScore contract). ``observer()`` runs at every network evaluation."""
        model = self.score_model(ema)
        model.observer = observer
        return model

    # ---- training -----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x0 = batch[0] if isinstance(batch, (list, tuple)) else batch
        if self.channels_last and x0.dim() == 4:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        condition = getattr(self.net, "condition_on_data", None)
        if condition is not None:  # data-dependent network context, e.g. graph node masks (networks/graph.py)
            condition(x0)
        loss = self.objective.loss(self.score_model(ema=False), self.process, x0).mean()
        if not torch.isfinite(loss):
            return self._skip_bad_step("loss")
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x0.shape[0])
        return loss

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        """Skip the update (and the EMA) when the loss or a gradient is non-finite, and undo it (weights and
        optimiser state) when it leaves non-finite weights or moves them by more than ``max_update_ratio``
        times their norm (``optim.lr=1e10``: finite loss and gradients, weights blown up to 1e28)."""
        loss = optimizer_closure()  # training_step + backward
        if loss is None:  # training_step already counted a non-finite loss
            optimizer.zero_grad(set_to_none=True)
            return
        grads = [p.grad for p in self.net.parameters() if p.grad is not None]
        if not _all_finite(grads):
            optimizer.zero_grad(set_to_none=True)
            self._skip_bad_step("non-finite gradient")
            return
        before = self.update_snapshot.take(self.net, optimizer) if self.max_update_ratio else None
        optimizer.step()
        problem = self._update_problem(before.params) if before is not None else None
        if problem is not None:
            before.restore(self.net, optimizer)
            optimizer.zero_grad(set_to_none=True)
            self._skip_bad_step(problem)
            return
        self.consecutive_bad_steps = 0
        self.last_good_step = self.global_step + 1  # Lightning counts the step after optimizer_step
        self._update_ema()

    @torch.no_grad()
    def _update_problem(self, before: list[torch.Tensor]) -> str | None:
        now = [p.detach() for p in self.net.parameters()]
        if not now:
            return None
        norm_now = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(now)))
        if not torch.isfinite(norm_now):
            return "non-finite weights after the update"
        norm_before = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(before)))
        change = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(torch._foreach_sub(now, before))))
        ratio = float(change / norm_before.clamp_min(1e-12))
        if not ratio <= self.max_update_ratio:
            return f"exploding update (|Δθ|/|θ| = {ratio:.1e} > optim.max_update_ratio={self.max_update_ratio:g})"
        return None

    def _skip_bad_step(self, what: str):
        self.bad_steps_total += 1
        self.consecutive_bad_steps += 1
        if not what.startswith(("non-finite", "exploding")):
            what = f"non-finite {what}"
        warnings.warn(f"{what} at step {self.global_step}: step skipped", stacklevel=2)
        if self.consecutive_bad_steps >= self.max_bad_steps:
            raise NonFiniteTrainingError(
                f"{self.consecutive_bad_steps} consecutive bad steps (non-finite loss/gradient or exploding update; "
                f"last: {what}) at step {self.global_step}; stopping. The weights are those after step "
                f"{self.last_good_step}, the last good one (checkpoints keep them). Lower optim.lr or check the data."
            )
        return None

    def on_train_batch_end(self, outputs, batch, batch_idx):
        # Every step (not only bad ones): the column is the running count of skipped steps.
        self.log("train/bad_steps", self.bad_steps_total.float(), on_step=True, on_epoch=False, batch_size=1)

    @torch.no_grad()
    def _update_ema(self):
        # One multi-tensor kernel (per dtype/device) instead of one lerp per parameter (issue 12).
        ema_params, params = list(self.ema.parameters()), [p.detach() for p in self.net.parameters()]
        if ema_params:
            decay = ema_decay_at(self.ema_decay, self.global_step, self.ema_warmup)
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        for e, b in zip(self.ema.buffers(), self.net.buffers()):
            e.copy_(b)

    def configure_optimizers(self):
        # Fused Adam (one kernel for all parameters) on CUDA, multi-tensor (foreach) elsewhere (issue 12).
        params = list(self.net.parameters())
        impl = {"fused": True} if params and all(p.is_cuda for p in params) else {"foreach": True}
        opt = torch.optim.Adam(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay, **impl)
        total = self.trainer.max_steps if self._trainer is not None else -1
        if self.lr_schedule == "cosine" and (total is None or total <= 0):
            raise ValueError(f"optim.lr_schedule={self.lr_schedule} needs trainer.max_steps > 0, got {total}")
        warm, schedule, decay = self.warmup_steps, self.lr_schedule, self.lr_decay
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, warm, schedule, total, decay))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """optim.clip_subnetworks=true: clip the gradient norm of each of the network's ``clip_groups()`` on its
        own (GDSS trains its X and A networks with two optimisers, each clipped at 1.0); else Lightning's global
        clip."""
        groups = getattr(self.net, "clip_groups", None) if self.clip_subnetworks else None
        if groups is None or not gradient_clip_val or gradient_clip_algorithm not in (None, "norm"):
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        for params in groups():
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)  # skips parameters without a gradient

    # ---- checkpoints ----------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint):
        # Global RNG streams drive t and ε in the objective: saving them makes resume bit-exact on CPU.
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "consecutive_bad_steps": self.consecutive_bad_steps,
            "last_good_step": self.last_good_step,
        }
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint):
        check_identity(checkpoint_identity(checkpoint), self.identity, self.allow_identity_change)
        rng = checkpoint.get("rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            self.consecutive_bad_steps = rng["consecutive_bad_steps"]
            self.last_good_step = rng.get("last_good_step", checkpoint.get("global_step", 0))
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    # ---- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self, n: int, sampler=None, generator: torch.Generator | None = None, batch_size: int = 1000, observer=None
    ):
        """Draw n data-space samples with the EMA network; returns (x, mean NFE per batch).
        ``observer()`` runs at every network evaluation (a progress bar)."""
        sampler = sampler or self.sampler
        if sampler is None:
            raise ValueError("no sampler configured")
        score = self.score_fn(ema=True, observer=observer)
        parts = getattr(self.ema, "coordinate_parts", None)
        if parts is not None:  # coordinate groups a sampler may treat separately (AMS on graphs: X | A | mask)
            score.coordinate_parts = parts
        outs, nfes = [], []
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            z = self.process.sample_prior((m, *self.data_shape), generator=generator, device=self.device)
            prepare = getattr(self.ema, "prepare_sampling", None)
            if prepare is not None:  # e.g. graphs: node counts drawn from the training distribution
                prepare(m, generator, self.device)
            z, nfe = sampler(self.process, score, z, generator=generator)
            x = self.process.data_block(z)
            finish = getattr(self.ema, "finish_sampling", None)
            outs.append((finish(x) if finish is not None else x).float().cpu())
            nfes.append(nfe)
        return torch.cat(outs), int(math.ceil(sum(nfes) / len(nfes)))


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every tensor is finite, with one device sync (not one per tensor): AMP's fused check."""
    found = {}
    try:
        for t in tensors:
            found.setdefault((t.device, t.dtype), []).append(t)
        flags = []
        for (device, _), group in found.items():
            flag = torch.zeros(1, device=device)
            torch._amp_foreach_non_finite_check_and_unscale_(group, flag, torch.ones(1, device=device))
            flags.append(flag.cpu() if len(found) > 1 else flag)
        return not any(bool(f) for f in flags)
    except (RuntimeError, NotImplementedError):  # op missing for this device/dtype: the plain check
        return all(bool(torch.isfinite(t).all()) for t in tensors)


class NonFiniteTrainingError(RuntimeError):
    pass


class UpdateSnapshot:
    """The weights and optimiser state before an update, to undo one that blew the weights up. The copies live
    in buffers kept across steps (one multi-tensor copy per step, not ~3 allocations per parameter)."""

    def __init__(self):
        self.params: list[torch.Tensor] = []
        self.keys: list[tuple[torch.Tensor, str]] = []  # (parameter, state key) of every tensor in the state
        self.values: list[torch.Tensor] = []
        self.other: dict = {}  # non-tensor state entries, copied as they are

    @torch.no_grad()
    def take(self, net: nn.Module, optimizer) -> UpdateSnapshot:
        params = [p.detach() for p in net.parameters()]
        keys = [(p, k) for p, s in optimizer.state.items() for k, v in s.items() if torch.is_tensor(v)]
        values = [optimizer.state[p][k] for p, k in keys]
        self.params = _copy_into(self.params, params)
        self.values = _copy_into(self.values if _same_keys(self.keys, keys) else [], values)
        self.keys = keys
        self.other = {
            p: {k: copy.deepcopy(v) for k, v in s.items() if not torch.is_tensor(v)} for p, s in optimizer.state.items()
        }
        return self

    @torch.no_grad()
    def restore(self, net: nn.Module, optimizer) -> None:
        torch._foreach_copy_([p.data for p in net.parameters()], self.params)
        state = {p: dict(entries) for p, entries in self.other.items()}
        for (p, k), saved in zip(self.keys, self.values):
            current = optimizer.state.get(p, {}).get(k)
            if current is not None and current.shape == saved.shape:  # in place: the tensor Adam holds
                current.copy_(saved)
                state[p][k] = current
            else:
                state[p][k] = saved.clone()
        optimizer.state.clear()  # state created by this update (the first one) goes too
        optimizer.state.update(state)


def _same_keys(a: list, b: list) -> bool:
    return len(a) == len(b) and all(p is q and k == l for (p, k), (q, l) in zip(a, b))


def _copy_into(buffers: list[torch.Tensor], tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """``tensors`` copied into ``buffers`` (taken for the same parameters, so of the same shapes; ``copy_``
    converts a device or dtype that a checkpoint load changed), or fresh clones when the count differs."""
    if len(buffers) != len(tensors):
        return [t.detach().clone() for t in tensors]
    if tensors:
        torch._foreach_copy_(buffers, tensors)
    return buffers
