"""Every diffusion composes with every data set and network through the Hydra configs (no CLI start-up)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import open_dict

from helpers import compose_config
from momentum_diffusion.cli.common import build_module, to_dict
from momentum_diffusion.data.graph_layout import GraphLayout

SHAPES = {"digits": (1, 8, 8), "gmm": (2,), "toy": (2,), "cifar10": (3, 32, 32)}
TINY_MODEL = {
    "digits": ["model.base_channels=8"],
    "gmm": ["model.hidden=32"],
    "toy": ["model.hidden=32"],
    "cifar10": [
        "model.base_channels=8",
        "model.channel_mult=[1,2]",
        "model.num_res_blocks=1",
        "model.attention_resolutions=[16]",
    ],
}


def compose_train(*overrides: str):
    return compose_config("train", *overrides)


def module_for(cfg, data_shape):
    """Build the module from a composed config (drop the parts that need a running Hydra app)."""
    with open_dict(cfg):
        cfg.data_shape = list(data_shape)
        cfg.callbacks = None
        cfg.logger = None
        cfg.trainer.default_root_dir = "."
    return build_module(to_dict(cfg))


@pytest.mark.parametrize("diffusion", ["vp", "ve", "cld", "hold"])
@pytest.mark.parametrize("data", ["digits", "gmm", "toy", "cifar10"])
def test_each_diffusion_composes_with_each_data_and_its_network(diffusion, data):
    cfg = compose_train(f"diffusion={diffusion}", f"data={data}", *TINY_MODEL[data])
    module = module_for(cfg, SHAPES[data])
    x0 = torch.rand(3, *SHAPES[data]) * 2 - 1
    loss = module.objective.loss(module.score_model(ema=False), module.process, x0)
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    loss.mean().backward()
    z = module.process.sample_prior((2, *SHAPES[data]))
    s = module.score_fn()(z, 0.5)
    assert s.shape == (2, *SHAPES[data])
    assert module.process.order == {"vp": 1, "ve": 1, "cld": 2, "hold": 3}[diffusion]


def test_natural_defaults_follow_the_diffusion_and_the_data():
    expected = {
        "vp": ("DSM", "euler_maruyama"),
        "ve": ("DSM", "predictor_corrector"),
        "cld": ("HSM", "sscs"),
        "hold": ("BCSM", "lie_trotter"),
    }
    for diffusion, (objective, sampler) in expected.items():
        cfg = compose_train(f"diffusion={diffusion}")
        assert cfg.objective._target_.endswith(objective)
        assert cfg.sampler._target_.endswith(sampler)
    assert compose_train("data=gmm").model._target_.endswith("MLP")
    assert compose_train().model._target_.endswith("UNet")


def test_ve_natural_objective_bounds_the_untrained_x0_at_the_prior_end():
    """VE's z_t has std σ_max = 50 at t_max; with a plain ε-network x̂_0 = z − σ ε̂ carries the network's error ×50
    (a zero network: x̂_0 = z, rms 50). The natural VE objective's mixed score makes the zero network's x̂_0 the
    Gaussian posterior mean, z / (1 + σ²) for data_std 1: rms ≈ 0.02."""
    from gaussian import ZeroBlocks
    from momentum_diffusion.processes.noise_factor import data_posterior_mean

    def rms_x0_hat(*overrides):
        module = module_for(compose_train("diffusion=ve", "data=gmm", *TINY_MODEL["gmm"], *overrides), (2,))
        process = module.process
        model = module.objective.score_model(ZeroBlocks(1, 1), process)
        z = process.sample_prior((4000, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        return float(data_posterior_mean(process, z, model(z, process.t_max), process.t_max).square().mean().sqrt())

    assert rms_x0_hat() < 0.05
    assert rms_x0_hat("objective=dsm") > 40  # the plain parametrisation, for contrast


def test_hold_order_option_builds_the_nth_order_chain():
    cfg = compose_train("diffusion=hold", "diffusion.order=4", "objective=bcsm", *TINY_MODEL["digits"])
    module = module_for(cfg, (1, 8, 8))
    assert module.process.order == 4
    assert module.net(torch.zeros(2, 4, 8, 8), torch.zeros(2)).shape == (2, 1, 8, 8)


@pytest.mark.parametrize("experiment", ["cifar10_cld", "cifar10_hold", "celebahq_cld", "celebahq_hold"])
def test_experiment_configs_compose_with_the_papers_pairings(experiment):
    data, diffusion = experiment.split("_")
    cfg = compose_train(f"experiment={experiment}", "trainer=ddp")
    assert cfg.diffusion._target_.endswith(diffusion)
    assert cfg.objective._target_.endswith({"cld": "HSM", "hold": "BCSM"}[diffusion])
    assert cfg.sampler._target_.endswith({"cld": "sscs", "hold": "lie_trotter"}[diffusion])
    assert cfg.model._target_.endswith("NCSNpp") and cfg.model.attention_resolutions == [16]
    assert cfg.data._target_.endswith({"cifar10": "CIFAR10DataModule", "celebahq": "CelebAHQDataModule"}[data])
    assert cfg.trainer.strategy.process_group_backend == "nccl"


@pytest.mark.parametrize("diffusion", ["vp", "cld", "hold"])
@pytest.mark.parametrize("data", ["digits", "gmm"])
def test_gddim_noise_factor_predicts_every_block_and_is_recorded(diffusion, data):
    """objective.kt=gddim: the network outputs k blocks of ε, the score keeps the data shape, and the
    identity a checkpoint is checked against records kt (a cholesky config refuses the weights)."""
    from momentum_diffusion.lightning.module import CheckpointMismatchError, check_identity

    cfg = compose_train(f"diffusion={diffusion}", f"data={data}", "objective.kt=gddim", *TINY_MODEL[data])
    module = module_for(cfg, SHAPES[data])
    k = module.process.order
    z = module.process.sample_prior((2, *SHAPES[data]))
    model = module.score_model(ema=False)
    assert model.predict_noise(z, 0.5).shape == (2, k, *SHAPES[data])
    assert module.score_fn()(z, 0.5).shape == (2, *SHAPES[data])
    loss = module.objective.loss(model, module.process, torch.rand(3, *SHAPES[data]))
    assert loss.shape == (3,) and torch.isfinite(loss).all()
    assert module.identity["kt"] == "gddim"
    plain = module_for(compose_train(f"diffusion={diffusion}", f"data={data}", *TINY_MODEL[data]), SHAPES[data])
    with pytest.raises(CheckpointMismatchError, match="kt"):
        check_identity(module.identity, plain.identity)
    legacy = {key: value for key, value in plain.identity.items() if key != "kt"}  # written before kt existed
    check_identity(legacy, plain.identity)


def test_progress_observer_keeps_the_noise_prediction_contract(monkeypatch):
    """A progress observer (sample.py/evaluate.py) sees every network evaluation and does not hide the
    score model's ε̂ from expint: with objective.kt=gddim = sampler.kt, expint calls predict_noise."""
    from momentum_diffusion.samplers import configure
    from momentum_diffusion.samplers.base import NoisePredictingScore, predicted_noise

    cfg = compose_train("diffusion=cld", "data=gmm", "objective.kt=gddim", "sampler=expint", *TINY_MODEL["gmm"])
    module = module_for(cfg, SHAPES["gmm"])
    score = module.score_fn(observer=lambda: None)
    assert isinstance(score, NoisePredictingScore)
    assert predicted_noise(score, module.objective.noise_factor) == score.predict_noise
    calls, score_calls = [], []
    original = type(score).score
    monkeypatch.setattr(type(score), "score", lambda self, z, t: score_calls.append(t) or original(self, z, t))
    sampler = configure(module.sampler, nfe=6, stochasticity=0.0, prediction="noise", kt="gddim", denoise=True)
    _, nfe = module.sample(5, sampler, generator=torch.Generator().manual_seed(0), observer=lambda: calls.append(1))
    assert nfe == 6 and len(calls) == 6  # every evaluation observed
    assert len(score_calls) == 1  # the final denoising step only: the 5 steps took ε̂ directly


def test_graph_experiments_pair_each_process_and_stop_equally_far_from_the_prior():
    """The ego_small experiments of VP, CLD and HOLD choose β so that the data coefficient of the kernel at
    t = 1 (Φ(τ_1)_11) is the same for all three (GDSS's VP β ∈ [0.1, 1]: e^{-0.275} = 0.760)."""
    expected = {"graphs_ego_small": ("vp", "euler_maruyama"), "graphs_ego_small_cld": ("cld", "sscs"),
                "graphs_ego_small_hold": ("hold", "lie_trotter")}  # fmt: skip
    coefficients = {}
    for experiment, (diffusion, sampler) in expected.items():
        cfg = compose_train(f"experiment={experiment}")
        assert cfg.diffusion._target_.endswith(diffusion) and cfg.sampler._target_.endswith(sampler)
        assert cfg.model._target_.endswith("GraphScoreNetwork")
        layout = GraphLayout(cfg.data.max_nodes, cfg.data.n_features)
        module = module_for(cfg, (layout.dim,))
        t = torch.ones(1, dtype=torch.float64)
        coefficients[diffusion] = float(module.process.mean_factor(t)[0, 0])
    assert coefficients["vp"] == pytest.approx(0.760, abs=2e-3)
    assert coefficients["cld"] == pytest.approx(coefficients["vp"], abs=5e-3)
    assert coefficients["hold"] == pytest.approx(coefficients["vp"], abs=5e-3)
