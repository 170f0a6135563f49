"""Device placement is part of correctness: every sampler, the exact score and the score model run with
their state on an accelerator, give the same numbers as on the host, and do not copy or synchronise inside
the step loop. Checked on any machine through the pretend device of tests/pretend_device.py; a real GPU run
is `make gpu-check` (scripts/gpu_check.py), and the CUDA-only test below skips without one."""

from __future__ import annotations

import pytest
import torch

from gaussian import score_fn
from momentum_diffusion.exact import ExactScore, load_gmm
from momentum_diffusion.objectives.score_model import ScoreModel
from momentum_diffusion.processes import cld, hold, ve, vp
from momentum_diffusion.samplers import ALL_SAMPLERS, configure
from pretend_device import DEVICE, OnDevice, PretendDevice, host

PROCESSES = {"vp": vp, "ve": ve, "cld": cld, "hold": hold}
# every sampler, and the options that take other code paths. Not here: the adaptive PF-ODE (torchdiffeq
# builds tensors with torch.tensor(…, device=…), which bypasses the pretend device; its step control reads
# the error norm on the host by design): the CUDA test below and `make gpu-check` cover it.
CASES = {
    "em": ("em", {}),
    "pc": ("pc", {}),
    "pc_reverse_diffusion": ("pc", {"predictor": "reverse_diffusion"}),
    "ode_heun": ("ode", {"method": "heun"}),
    "sscs": ("sscs", {}),
    "sscs_heun": ("sscs", {"remainder": "heun", "denoise": "tweedie"}),
    "lie_trotter": ("lie_trotter", {}),
    "ams": ("ams", {}),
    "expint": ("expint", {}),
    "expint_cholesky": ("expint", {"kt": "cholesky", "order": 3}),
    "expint_stochastic": ("expint", {"stochasticity": 1.0, "prediction": "data", "order": 3, "grid": "quadratic"}),
    "expint_switch": ("expint", {"deterministic_from_logsnr": 0.0}),
}


def cases():
    """Every case on every process it supports. The default run keeps, per case, the highest-order process it
    supports (HOLD's three blocks reach every code path CLD's two do), and the default sampler on all four; the
    rest run with -m slow."""
    processes = {name: make() for name, make in PROCESSES.items()}
    for case, (name, _options) in CASES.items():
        supported = [p for p, process in processes.items() if ALL_SAMPLERS[name].supports(process)]
        primary = max(supported, key=lambda p: processes[p].order)
        for process_name in supported:
            default_run = case == "expint" or process_name == primary
            marks = () if default_run else (pytest.mark.slow,)
            yield pytest.param(case, process_name, id=f"{case}-{process_name}", marks=marks)


def run(sampler, process, score, z0, nfe):
    torch.manual_seed(7)  # the global stream: the pretend device draws from it exactly as the host does
    return sampler(process, score, z0, nfe=nfe)[0]


@pytest.mark.parametrize("case, process_name", list(cases()))
def test_sampler_runs_on_the_device_like_on_the_host_without_copies_in_the_loop(case, process_name):
    name, options = CASES[case]
    process = PROCESSES[process_name]()
    sampler = configure(ALL_SAMPLERS[name], **options)
    score = score_fn(process, mean=0.3, std=0.6)
    z0 = process.sample_prior((16, 3), generator=torch.Generator().manual_seed(0))
    on_host = run(sampler, process, score, z0, nfe=12)
    with PretendDevice() as device:
        z0_device = z0.to(DEVICE)
        run(sampler, process, score, z0_device, nfe=12)  # warm: host constants cross once and stay
        device.reset()
        out = run(sampler, process, device.watch(score), z0_device, nfe=12)
    assert isinstance(out, OnDevice)
    torch.testing.assert_close(host(out), on_host, rtol=1e-5, atol=1e-6)
    assert device.in_loop("sync") == [], "device→host synchronisation inside the step loop"
    assert device.in_loop("h2d") == [], "host→device copy inside the step loop"


@pytest.mark.parametrize("spec", ["ring8_2d", "anisotropic_4d"])
@pytest.mark.parametrize("process_name", ["vp", "cld", "hold"])
def test_exact_mixture_score_follows_the_device(spec, process_name):
    process = PROCESSES[process_name]()
    gmm = load_gmm(spec)
    z = process.sample_prior((32, gmm.dim), generator=torch.Generator().manual_seed(1))
    t_batch = torch.linspace(0.05, 0.9, 32, dtype=torch.float64)
    expected = [ExactScore(process, gmm)(z, 0.3), ExactScore(process, gmm)(z, t_batch)]
    exact = ExactScore(process, gmm)
    with PretendDevice():
        z_device = z.to(DEVICE)
        got = [exact(z_device, 0.3), exact(z_device, t_batch)]
    for g, e in zip(got, expected):
        assert isinstance(g, OnDevice)
        torch.testing.assert_close(host(g), e, rtol=1e-10, atol=1e-12)


class TinyNet(torch.nn.Module):
    def __init__(self, order: int, d: int, blocks: int = 1):
        super().__init__()
        self.lin = torch.nn.Linear(order * d + 1, blocks * d)  # ε of the predicted blocks

    def forward(self, z_flat, t):
        return self.lin(torch.cat([z_flat, t[:, None]], dim=1))


@pytest.mark.parametrize(
    "mixed_score, kt, input_scaling",
    [(False, "cholesky", False), (True, "cholesky", False), (True, "gddim", False), (True, "cholesky", True)],
)
def test_score_model_training_loss_and_sampling_follow_the_device(mixed_score, kt, input_scaling):
    from momentum_diffusion.objectives.noise_prediction import NoisePredictionObjective

    process, d = cld(), 3
    torch.manual_seed(0)
    blocks = 1 if kt == "cholesky" else process.order
    net = TinyNet(process.order, d, blocks)
    model = ScoreModel(net, process, mixed_score=mixed_score, data_std=0.5, kt=kt, input_scaling=input_scaling)
    objective = NoisePredictionObjective(mixed_score=mixed_score, kt=kt, input_scaling=input_scaling)
    x0 = torch.randn(8, d)
    z0 = process.sample_prior((8, d), generator=torch.Generator().manual_seed(0))
    sampler = configure(ALL_SAMPLERS["expint"], nfe=6)
    torch.manual_seed(3)
    loss_host = objective.loss(model, process, x0)
    out_host = run(sampler, process, model, z0, nfe=6)
    with PretendDevice():
        model_device = ScoreModel(
            net, process, mixed_score=mixed_score, data_std=0.5, kt=kt, input_scaling=input_scaling
        ).to(DEVICE)
        torch.manual_seed(3)
        loss_device = objective.loss(model_device, process, x0.to(DEVICE))
        out_device = run(sampler, process, model_device, z0.to(DEVICE), nfe=6)
    assert isinstance(loss_device, OnDevice) and isinstance(out_device, OnDevice)
    torch.testing.assert_close(host(loss_device), loss_host, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(host(out_device), out_host, rtol=1e-5, atol=1e-6)


def test_mixing_host_and_device_tensors_fails_as_on_a_gpu():
    """The harness itself: it must catch the bug class it exists for."""
    with PretendDevice() as device:
        z = torch.zeros(2, 3, device=DEVICE)
        with pytest.raises(RuntimeError, match="same device"):
            z * torch.ones(3)
        z * torch.tensor(2.0)  # a 0-dim host scalar is fine, as with CUDA
        float(z.sum())
        assert [e.kind for e in device.events] == ["sync"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", sorted(ALL_SAMPLERS))
def test_every_sampler_on_a_real_gpu(name):
    process = cld()
    score = score_fn(process, mean=0.3, std=0.6)
    z0 = process.sample_prior((64, 3), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    out, _ = ALL_SAMPLERS[name](process, score, z0, nfe=12, generator=torch.Generator("cuda").manual_seed(1))
    assert out.device.type == "cuda" and torch.isfinite(out).all()
