"""Network speed benchmark (issue 12): parameters, FLOPs, training and inference img/s, memory, compile time
and the samplers' own overhead, for the network of a training config. Prints markdown tables.

    python scripts/bench_network.py --preset cifar10                 # CLD CIFAR-10 NCSN++ (experiment=cifar10_cld)
    python scripts/bench_network.py --preset cpu --baseline HEAD~3   # small NCSN++ on a CPU, vs an older revision
    python scripts/bench_network.py --preset tiny                    # seconds; what the test runs
    python scripts/bench_network.py experiment=cifar10_hold model.compile=true --batch 128   # any Hydra overrides

What is measured (median of ``--steps`` timed steps after ``--warmup`` steps, device synchronised per step):

- params; GFLOP per image, forward and forward+backward (``torch.utils.flop_counter`` on the meta device,
  so the full-size network costs nothing to count on a CPU);
- **train loop** img/s: forward, MSE against a random target, backward, grad-norm clip 1.0, Adam (fused on
  CUDA, foreach on CPU) — per mode: ``fp32`` (TF32 convs on CUDA), ``bf16`` (autocast),
  ``bf16+cl`` (autocast + channels_last), ``compiled`` (bf16+cl + regional ``torch.compile`` of the blocks;
  its first step is reported as the compile time); peak GiB on CUDA;
- **full step** img/s: the project's own training step (``DiffusionModule`` in a Lightning ``Trainer``:
  objective, NaN guards, clipping, Adam, EMA; bf16-mixed on CUDA), read from the ``ImagesPerSecond`` callback;
- **inference** img/s per NFE (one forward of a batch of ``--infer-batch``) per mode;
- **sampler overhead** at NFE 50: each sampler that supports the process runs with the network replaced by
  a free stub; its time over (NFE used × one network forward in the fastest measured mode) is the share;
- ``--baseline REV``: the networks package of git revision REV is loaded next to the current one (same
  state_dict), its outputs are compared and its speed is measured interleaved with the current one in the
  same run: the ratios are what the change bought, on this machine.

Compiled mode is measured by default on CUDA only (``--modes`` forces it on a CPU: inductor needs a C++
toolchain and minutes there).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from momentum_diffusion.reports.network_speed import (
    build_net,
    count_flops,
    infer_step,
    load_baseline,
    make_inputs,
    mode_net,
    op_counts,
    peak_gib,
    peak_reset,
    render,
    sync,
    timed,
    train_loop_step,
)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"

PRESETS = {
    # The papers' CLD CIFAR-10 NCSN++ (107 M parameters), batch 128 as trained; inference batch 500 (issue 12).
    "cifar10": dict(overrides=["experiment=cifar10_cld"], batch=128, infer_batch=500, steps=15, warmup=4),
    # A small NCSN++ at 32×32 that a 2-core CPU measures in about a minute.
    "cpu": dict(
        overrides=[
            "experiment=cifar10_cld",
            "model.base_channels=32",
            "model.channel_mult=[1,2,2]",
            "model.num_res_blocks=2",
            "model.attention_resolutions=[16]",
            "model.dropout=0.0",
        ],
        batch=8,
        infer_batch=16,
        steps=3,
        warmup=1,
    ),
    # Seconds on a CPU: the test's configuration (8×8 digits, CLD, one block per level).
    "tiny": dict(
        overrides=[
            "data=digits",
            "diffusion=cld",
            "model=ncsnpp",
            "model.base_channels=16",
            "model.channel_mult=[1,2]",
            "model.num_res_blocks=1",
            "model.attention_resolutions=[4]",
            "model.dropout=0.0",
        ],
        batch=4,
        infer_batch=4,
        steps=2,
        warmup=1,
    ),
}
MODES = ("fp32", "bf16", "bf16+cl", "compiled")
CLOCK = time.perf_counter  # --clock cpu: time.process_time (see network_speed.timed)
SAMPLERS = ("em", "pc", "ode", "sscs", "lie_trotter", "ams", "expint")


# ----------------------------------------------------------------------------------------------------------
# Configuration.


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return hydra_compose(config_name="train", overrides=overrides)


def data_shape_of(cfg, given: str | None = None) -> tuple[int, ...]:
    """The data shape: ``--data-shape``, else the data module's (built, not loaded: no data is needed)."""
    if given:
        return tuple(int(v) for v in given.split(","))
    from hydra.utils import instantiate

    shape = getattr(instantiate(cfg.data), "data_shape", None)
    if shape is None:
        raise SystemExit(f"cannot tell the data shape of {cfg.data._target_}; pass --data-shape C,H,W")
    return tuple(shape)


def train_config(cfg, data_shape) -> dict:
    """The resolved parts of a training config that `build_module` reads."""
    from omegaconf import OmegaConf

    out = {
        k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("diffusion", "objective", "model", "sampler", "optim")
    }
    out["data"] = {"_target_": cfg.data._target_}
    out["data_shape"] = list(data_shape)
    return out


# ----------------------------------------------------------------------------------------------------------
# Measurements.


def bench_network(args, config, order, out_blocks, device, baseline) -> dict:
    shape = config["data_shape"]
    torch.manual_seed(0)
    base = build_net(config, order, out_blocks).train()
    state = base.state_dict()
    net_in, net_out = order * shape[0], out_blocks * shape[0]
    gen = torch.Generator().manual_seed(1)
    target = torch.randn(args.batch, net_out, *shape[1:], generator=gen).to(device)
    compile_kwargs = {"mode": args.compile_mode} if args.compile_mode else {}
    rows, equiv = {}, None

    def baseline_net() -> nn.Module:  # the baseline revision's network with the current one's weights
        old = build_net(config, order, out_blocks, baseline)
        old.load_state_dict(state)
        return old

    if baseline is not None:  # same weights; outputs compared in float32 (eval, no dropout)
        old = baseline_net()
        x, t = make_inputs(net_in, shape, 2, torch.device("cpu"), "fp32", seed=2)
        with torch.no_grad():
            a, b = copy.deepcopy(base).eval(), old.eval()
            for p in a.conv_out.parameters():  # a zero-initialised output would compare trivially
                p.normal_(generator=gen)
            b.load_state_dict(a.state_dict())
            ref = b(x, t)
            equiv = float((a(x, t) - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
    counts = {}
    for mode in [m for m in args.modes if m in ("fp32", "bf16+cl")]:  # eager dispatch counts (CPU-measurable)
        counts[mode] = {"new": op_counts(base, mode, net_in, shape, device)}
        if baseline is not None:
            counts[mode]["old"] = op_counts(baseline_net(), mode, net_in, shape, device)
    for mode in args.modes:
        row = {}
        nets = {"new": mode_net(base, mode, device, compile_kwargs)}
        if baseline is not None and mode != "compiled":
            nets["old"] = mode_net(baseline_net(), mode, device, {})
        x, t = make_inputs(net_in, shape, args.batch, device, mode)
        steps = {k: train_loop_step(n.train(), mode, device, x, t, target) for k, n in nets.items()}
        if mode == "compiled":  # the first step compiles: time it alone
            sync(device)
            t0 = time.perf_counter()
            steps["new"]()
            sync(device)
            row["compile_s"] = time.perf_counter() - t0
        peak_reset(device)
        times = timed(steps, args.steps, args.warmup, device, rounds=args.rounds if len(steps) > 1 else 1, clock=CLOCK)
        row["train_img_s"] = args.batch / statistics.median(times["new"])
        row["peak_gib"] = peak_gib(device)
        if "old" in times:
            row["train_img_s_old"] = args.batch / statistics.median(times["old"])
        xi, ti = make_inputs(net_in, shape, args.infer_batch, device, mode)
        fns = {k: infer_step(n.eval(), mode, device, xi, ti) for k, n in nets.items()}
        if mode == "compiled":
            sync(device)
            t0 = time.perf_counter()
            fns["new"]()
            sync(device)
            row["infer_compile_s"] = time.perf_counter() - t0
        times = timed(fns, args.steps, args.warmup, device, rounds=args.rounds if len(fns) > 1 else 1, clock=CLOCK)
        row["infer_img_s"] = args.infer_batch / statistics.median(times["new"])
        row["forward_s"] = statistics.median(times["new"])
        if "old" in times:
            row["infer_img_s_old"] = args.infer_batch / statistics.median(times["old"])
        rows[mode] = row
        del nets, steps, fns
    return {"modes": rows, "baseline_max_rel_diff": equiv, "op_counts": counts}


def bench_full_step(args, cfg, config, device) -> dict:
    """The project's own training step, through Lightning, read from the ImagesPerSecond callback."""
    import lightning.pytorch as pl

    from momentum_diffusion.cli.common import build_module
    from momentum_diffusion.lightning.throughput import ImagesPerSecond

    torch.manual_seed(0)
    module = build_module(config)
    window = max(args.steps, 2)
    windows = 2 if args.warmup else 1  # the first window (after the first step) warms up; the last is measured
    n = args.batch * (1 + windows * window)
    data = torch.rand(n, *config["data_shape"]) * 2 - 1
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=args.batch, drop_last=True)
    meter = ImagesPerSecond(every_n_steps=window)
    precision = "bf16-mixed" if device.type == "cuda" else "32-true"
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=precision,
        max_steps=1 + windows * window,
        gradient_clip_val=1.0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[meter],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader)
    return {
        "precision": precision,
        "img_s": meter.history[-1]["img_per_s"],
        "first_step_s": meter.first_step_s,
        "channels_last": bool(config["optim"].get("channels_last")),
        "compile": bool(config["model"].get("compile")) or bool(config["optim"].get("compile")),
    }


class _FreeNet(nn.Module):
    """Stands in for the network: returns a preallocated zero output (costs nothing)."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, x, t):
        return self.out[: x.shape[0]]


def bench_samplers(args, cfg, config, process, objective, device, forward_s: float, names) -> dict:
    from momentum_diffusion.cli.common import build_sampler

    shape = config["data_shape"]
    out_blocks = objective.noise_factor.blocks(process)
    free = _FreeNet(torch.zeros(args.infer_batch, out_blocks * shape[0], *shape[1:], device=device))
    score = objective.score_model(free, process)
    results = {}
    for name in names:
        try:
            sc = compose([*args.overrides_used, f"sampler={name}", f"sampler.nfe={args.sampler_nfe}"]).sampler
            if name == "ode":
                sc.method = "heun"  # fixed steps: the same NFE budget as the others
            sampler = build_sampler(sc, process)
        except Exception as exc:  # unknown, or unsupported by this process: say so
            results[name] = {"skipped": str(exc).splitlines()[0][:80]}
            continue
        gen = torch.Generator(device=device).manual_seed(0)

        def run(sampler=sampler, gen=gen):
            z = process.sample_prior((args.infer_batch, *shape), generator=gen, device=device)
            return sampler(process, score, z, generator=gen)[1]

        with torch.no_grad():  # not inference_mode: the processes cache constants by tensor version
            nfe = run()
            times = timed({"s": run}, max(args.steps // 2, 1), 0, device, clock=CLOCK)["s"]
        overhead = statistics.median(times)
        results[name] = {"nfe": nfe, "overhead_s": overhead, "share": overhead / (nfe * forward_s)}
    return results


# ----------------------------------------------------------------------------------------------------------


def parse(argv):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml (after the preset's)")
    p.add_argument(
        "--preset", choices=sorted(PRESETS), default=None, help="cifar10 on CUDA, else cpu (tiny: the test's)"
    )
    p.add_argument("--batch", type=int)
    p.add_argument("--infer-batch", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--warmup", type=int)
    p.add_argument("--rounds", type=int, default=3, help="interleaving rounds against --baseline")
    p.add_argument("--modes", default=None, help=f"comma list of {','.join(MODES)}")
    p.add_argument("--samplers", default="all", help="comma list, 'all' or 'none'")
    p.add_argument("--sampler-nfe", type=int, default=50, help="NFE budget of the sampler-overhead runs")
    p.add_argument("--no-full-step", action="store_true", help="skip the DiffusionModule/Lightning step")
    p.add_argument("--baseline", default=None, help="git revision whose networks package to compare with")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for 'compiled' (e.g. max-autotune)")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: CPU seconds of this process (for a shared CPU; use with --threads 1)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None)
    p.add_argument("--data-shape", default=None, help="C,H,W when the data module cannot tell")
    p.add_argument("--json", default=None, help="also write the results here")
    return p.parse_args(argv)


def run(argv=None) -> dict:
    args = parse(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    preset = PRESETS[args.preset or ("cifar10" if device.type == "cuda" else "cpu")]
    for key in ("batch", "infer_batch", "steps", "warmup"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    if args.modes is None:
        args.modes = list(MODES) if device.type == "cuda" else [m for m in MODES if m != "compiled"]
    else:
        args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
        bad = set(args.modes) - set(MODES)
        if bad:
            raise SystemExit(f"unknown modes {sorted(bad)}; choose from {MODES}")
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True  # "fp32" = TF32 tensor cores, as in issue 12's table
        torch.backends.cudnn.allow_tf32 = True
    args.overrides_used = [*preset["overrides"], *args.overrides]

    from hydra.utils import instantiate

    cfg = compose(args.overrides_used)
    config = train_config(cfg, data_shape_of(cfg, args.data_shape))
    process = instantiate(config["diffusion"], _convert_="all")
    objective = instantiate(config["objective"])
    order, out_blocks = process.order, objective.noise_factor.blocks(process)
    baseline = load_baseline(args.baseline, ROOT) if args.baseline else None

    params, gf, gfb = count_flops(config, order, out_blocks)
    res = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "overrides": args.overrides_used,
        "batch": args.batch,
        "infer_batch": args.infer_batch,
        "steps": args.steps,
        "params": params,
        "gflop_fwd": gf,
        "gflop_fwd_bwd": gfb,
        "baseline": args.baseline,
        "clock": args.clock,
    }
    if baseline is not None:
        res["baseline_params"], res["baseline_gflop_fwd"], res["baseline_gflop_fwd_bwd"] = count_flops(
            config, order, out_blocks, baseline
        )
    res["network"] = bench_network(args, config, order, out_blocks, device, baseline)
    if not args.no_full_step:
        res["full_step"] = bench_full_step(args, cfg, config, device)
    names = SAMPLERS if args.samplers == "all" else [] if args.samplers == "none" else args.samplers.split(",")
    if names:
        fastest = min(res["network"]["modes"], key=lambda m: res["network"]["modes"][m]["forward_s"])
        res["sampler_nfe"] = args.sampler_nfe
        res["sampler_mode"], res["forward_s"] = fastest, res["network"]["modes"][fastest]["forward_s"]
        res["samplers"] = bench_samplers(args, cfg, config, process, objective, device, res["forward_s"], names)
    res["markdown"] = render(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    return res


def main(argv=None) -> None:
    res = run(argv)
    print(res["markdown"])
    if res.get("baseline"):
        print(
            f"\nBaseline params {res['baseline_params'] / 1e6:.2f} M, GFLOP/img fwd {res['baseline_gflop_fwd']:.3f}, "
            f"fwd+bwd {res['baseline_gflop_fwd_bwd']:.3f}"
        )


if __name__ == "__main__":
    main()
