"""Timing and reporting pieces of ``scripts/bench_network.py`` (issue 12): device-synchronised interleaved
timing, peak memory, a dispatch counter (ops, casts, layout copies, bytes written), the timed training and
inference steps per precision mode, the network of a resolved config (and of an older revision, for ``--baseline``),
FLOP counts, and the markdown report."""

from __future__ import annotations

import copy
import importlib
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

# ----------------------------------------------------------------------------------------------------------
# The network of a config, its baseline at another revision, and its FLOPs.


def network_factory(config: dict, module=None):
    """(class, kwargs) of the config's network; ``module`` replaces the networks package (baseline)."""
    from hydra.utils import get_class

    model = dict(config["model"])
    target = model.pop("_target_")
    model.pop("_partial_", None)
    cls = get_class(target) if module is None else getattr(module, target.rsplit(".", 1)[1])
    return cls, model


def build_net(config: dict, order: int, out_blocks: int, module=None, **extra) -> nn.Module:
    """The config's network, sized by the training module's own rule (`build_network`)."""
    from functools import partial

    from ..lightning.module import build_network

    cls, kwargs = network_factory(config, module)
    if module is not None:
        kwargs.pop("compile", None)
    return build_network(partial(cls, **kwargs, **extra), order, tuple(config["data_shape"]), out_blocks)


def load_baseline(rev: str, root: Path):
    """The ``networks`` package of git revision ``rev`` of the repository at ``root``, importable next to the
    current one."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_network_"))
    name = "baseline_networks_" + re.sub(r"\W", "_", rev)
    pkg = tmp / name
    pkg.mkdir()
    listing = subprocess.run(
        ["git", "-C", str(root), "ls-tree", "--name-only", rev, "src/momentum_diffusion/networks/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for path in listing:
        if path.endswith(".py"):
            src = subprocess.run(
                ["git", "-C", str(root), "show", f"{rev}:{path}"], check=True, capture_output=True, text=True
            ).stdout
            (pkg / Path(path).name).write_text(src.replace("momentum_diffusion.networks", name))
    sys.path.insert(0, str(tmp))
    return importlib.import_module(name)


def count_flops(config: dict, order: int, out_blocks: int, module=None) -> tuple[int, float, float]:
    """(params, GFLOP/img forward, GFLOP/img forward+backward), counted on the meta device."""
    with torch.device("meta"):
        net = build_net(config, order, out_blocks, module)
        x = torch.randn(1, order * config["data_shape"][0], *config["data_shape"][1:])
        t = torch.rand(1)
    params = sum(p.numel() for p in net.parameters())
    with FlopCounterMode(display=False) as counter:
        loss = net(x, t).square().mean()
        fwd = counter.get_total_flops()
        loss.backward()
    return params, fwd / 1e9, counter.get_total_flops() / 1e9


# ----------------------------------------------------------------------------------------------------------
# Timing.


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(
    fns: dict, steps: int, warmup: int, device: torch.device, rounds: int = 1, clock=time.perf_counter
) -> dict[str, list[float]]:
    """Per-call seconds of each callable; with several, they run interleaved (A B A B …) in ``rounds``.
    ``clock=time.process_time`` counts this process's CPU seconds: on a shared, overloaded CPU with one thread
    it measures the work done, not the time spent waiting for a core."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    per_round = max(1, math.ceil(steps / rounds))
    for _ in range(rounds):
        for key, fn in fns.items():
            for _ in range(per_round):
                sync(device)
                t0 = clock()
                fn()
                sync(device)
                times[key].append(clock() - t0)
    return times


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


# ----------------------------------------------------------------------------------------------------------
# What one step dispatches, and the steps that are timed.


class OpCounter:
    """Counts what one step dispatches to the backend (after autograd and autocast): non-view ops (≈ kernels
    in eager mode), dtype casts, layout copies, and bytes written by non-view outputs (memory traffic)."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self
        self.ops = self.casts = self.copies = self.bytes = 0

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                if not func.is_view:
                    counter.ops += 1
                    name = func.overloadpacket.__name__
                    counter.casts += name == "_to_copy"
                    counter.copies += name in ("clone", "copy_", "contiguous")
                    for o in out if isinstance(out, (tuple, list)) else (out,):
                        if isinstance(o, torch.Tensor):
                            counter.bytes += o.numel() * o.element_size()
                return out

        self.mode = Mode()

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def op_counts(net: nn.Module, mode: str, net_in: int, shape, device: torch.device) -> dict:
    """OpCounter over one training forward+backward at batch 2 (no optimizer), in eager ``mode`` (not compiled)."""
    net = mode_net(net, mode, device, {}).train()
    x, t = make_inputs(net_in, shape, 2, device, mode)
    with OpCounter() as c:
        with autocast(mode, device):
            loss = net(x, t).float().square().mean()
        loss.backward()
    return {"ops": c.ops, "casts": c.casts, "copies": c.copies, "mb": c.bytes / 2**20}


def channels_last(mode: str) -> bool:
    return mode in ("bf16+cl", "compiled")


def mode_net(base: nn.Module, mode: str, device: torch.device, compile_kwargs: dict) -> nn.Module:
    """A copy of ``base`` on ``device`` in ``mode``'s memory format, its blocks compiled in mode ``compiled``."""
    net = copy.deepcopy(base).to(device)
    if channels_last(mode):
        net = net.to(memory_format=torch.channels_last)
    if mode == "compiled":
        net.compile_blocks(**compile_kwargs)
    return net


def autocast(mode: str, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode != "fp32")


def make_inputs(net_in: int, shape, batch: int, device: torch.device, mode: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, net_in, *shape[1:], generator=gen).to(device)
    if channels_last(mode):
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.rand(batch, generator=gen).to(device) * 0.98 + 0.01


def train_loop_step(net: nn.Module, mode: str, device: torch.device, x, t, target):
    params = list(net.parameters())
    fused = {"fused": True} if device.type == "cuda" else {"foreach": True}
    opt = torch.optim.Adam(params, lr=1e-4, **fused)

    def step():
        with autocast(mode, device):
            loss = F.mse_loss(net(x, t).float(), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def infer_step(net: nn.Module, mode: str, device: torch.device, x, t):
    def step():
        with torch.inference_mode(), autocast(mode, device):
            net(x, t)

    return step


# ----------------------------------------------------------------------------------------------------------
# Report.


def fmt(v, digits=1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def render(res: dict) -> str:
    lines = [
        f"**{res['device']}** · torch {res['torch']} · `{' '.join(res['overrides'])}` · "
        f"batch {res['batch']} (train), {res['infer_batch']} (inference) · median of {res['steps']} steps"
        + (" · **CPU-time clock**" if res.get("clock") == "cpu" else ""),
        "",
    ]
    lines += [
        "| params | GFLOP/img fwd | GFLOP/img fwd+bwd |",
        "|---|---|---|",
        f"| {res['params'] / 1e6:.2f} M | {res['gflop_fwd']:.3f} | {res['gflop_fwd_bwd']:.3f} |",
        "",
    ]
    base = any("train_img_s_old" in r for r in res["network"]["modes"].values())
    vs = " vs baseline |" if base else ""
    head = f"| mode | train img/s (loop) |{vs} inference img/s per NFE |{vs} peak GiB | first step (compile) s |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for mode, r in res["network"]["modes"].items():
        cells = [mode, fmt(r["train_img_s"])]
        if base:
            cells.append(f"{r['train_img_s'] / r['train_img_s_old']:.2f}×" if "train_img_s_old" in r else "–")
        cells.append(fmt(r["infer_img_s"]))
        if base:
            cells.append(f"{r['infer_img_s'] / r['infer_img_s_old']:.2f}×" if "infer_img_s_old" in r else "–")
        cells += [fmt(r["peak_gib"], 2), fmt(r.get("compile_s"), 1)]
        lines.append("| " + " | ".join(cells) + " |")
    if res["network"].get("op_counts"):
        lines += [
            "",
            "Dispatched per training forward+backward (batch 2, eager): ops that are not views (≈ GPU kernels), "
            "dtype casts, layout copies, MiB written:",
            "",
            "| mode | network | ops | casts | copies | MiB written |",
            "|---|---|---|---|---|---|",
        ]
        for mode, by in res["network"]["op_counts"].items():
            for who, c in by.items():
                label = "current" if who == "new" else f"baseline `{res['baseline']}`"
                lines.append(f"| {mode} | {label} | {c['ops']} | {c['casts']} | {c['copies']} | {c['mb']:.1f} |")
    if res["network"].get("baseline_max_rel_diff") is not None:
        lines += [
            "",
            f"Baseline `{res['baseline']}`: same state_dict; max |new − old| / max |old| = "
            f"{res['network']['baseline_max_rel_diff']:.1e} (float32).",
        ]
    if res.get("full_step"):
        f = res["full_step"]
        lines += [
            "",
            f"Full training step (DiffusionModule in Lightning, {f['precision']}, channels_last "
            f"{f['channels_last']}, compile {f['compile']}): **{f['img_s']:,.1f} img/s**; first step "
            f"{f['first_step_s']:.2f} s.",
        ]
    if res.get("samplers"):
        lines += [
            "",
            f"Sampler overhead at NFE {res['sampler_nfe']} (network replaced by a free stub; share of NFE × one "
            f"forward in mode {res['sampler_mode']}, {res['forward_s'] * 1e3:.2f} ms):",
            "",
            "| sampler | NFE used | overhead ms | share of network time |",
            "|---|---|---|---|",
        ]
        for name, r in res["samplers"].items():
            if "skipped" in r:
                lines.append(f"| {name} | – | – | skipped: {r['skipped']} |")
            else:
                lines.append(f"| {name} | {r['nfe']} | {r['overhead_s'] * 1e3:.2f} | {100 * r['share']:.1f} % |")
    return "\n".join(lines)
