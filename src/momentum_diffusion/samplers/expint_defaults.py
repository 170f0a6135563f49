"""``sampler=expint``'s defaults and the named configurations the benchmark compares, with the evidence for each.

conf/sampler/expint.yaml leaves every option null; samplers/expint.py fills them from here (``defaults_for``).
"""

from __future__ import annotations

# The one place expint's defaults live: ``DEFAULTS``, with ``PROCESS_DEFAULTS[process.name]`` on top
# (``defaults_for``). The rule (docs/fast_sampling.md): the reverse SDE
# (λ = 1) in x̂_0-steps with the corrector on the quadratic grid for every process, since λ = 1 corrects a
# network's score errors along the way (digits FD at 10 NFE 75 against 488 for the best λ = 0 configuration on
# the same checkpoint) and has no fixed prior-to-sample map; order 2 for every process: on a calibration mixture
# that is no public spec (benchmarks/results/fast_sampling/calibration_random3d.yaml; NFE 15, 20, 30, 50; seed 0,
# n = 4000) order 3 reaches EM@1000's mode-KL band (target + 2 sd) at no smaller NFE than order 2 for any process
# (VP: 30 vs 20; VE, HOLD: tie at 30, 50; CLD: neither by 50), and on trained networks it amplifies the network's
# x̂_0 error: digits FD at 10 NFE, order 3 vs 2, CLD 7.6 / 6.5, HOLD 11.3 / 6.7, 14.1 / 8.0, 12.9 / 7.4, never
# better at 10–50 NFE (docs/fast_sampling.md, session 7). The logSNR grids won on that mixture for VP and CLD
# but start with evaluations at λ ≈ −10 … −8.8, where a network's x̂_0 = (z − σ ε̂)/α carries ε̂'s error ×1/α ≈ 100:
# digits VP FD 1.4e6 at 10 NFE (quadratic: 12–14), so they are not a default.
DEFAULTS = {
    "order": 2,
    "stochasticity": 1.0,
    "prediction": "data",
    "corrector": True,
    "kt": "gddim",
    "grid": "quadratic",
    "extrapolate": "t",
    "denoise": True,
    "deterministic_from_logsnr": None,  # never: λ throughout
}
# A process's departures from DEFAULTS. CLD and HOLD take no final denoising step: noise reaches their position
# block through the velocity, so at t_min it carries σ̃ ≈ 1e-5 (VP 1e-3), and the last x̂_0-step already lands on
# the data estimate; the NFE the final step cost buys one more step. Mode-KL at 10 NFE lower with exact scores on
# every spec (up to 2.2×); digits FD (4,000 samples, 10 / 20 NFE) on 10,000-step networks CLD 3.64 → 2.61 /
# 1.15 → 1.09, HOLD 2.39 → 2.14 / 1.49 → 1.38. VP keeps it: its networks lose 10 % without it (their Tweedie step
# at t_min still removes noise). docs/fast_sampling.md, session 19. HOLD takes λ = 0.5: lower mode-KL than λ = 1 on
# the calibration mixture (20 NFE .031 vs .058) and on the public specs (~1.6× at 20), and level or better on
# every HOLD network (digits FD 10 / 20 NFE: 1,000 steps 5.31 / 6.52 vs 6.24 / 7.06; 10,000 steps 2.03 / 1.39 vs
# 2.14 / 1.38); for VP, VE and CLD it loses on the short-trained networks (session 20). CLD extrapolates x̂_0 in
# log(1 + σ̃) (σ̃ = e^{−λ/2}; like σ̃ near the data, where x̂_0 is smooth in σ̃ and CLD's σ̃² grows like t³, like log σ̃
# at the noise end): on the calibration mixture the best variable (t, σ̃, log(1 + σ̃)) among those that do not lose on
# the digits networks, mode-KL 15 / 20 / 30 NFE .085 / .019 / .019 against t's .102 / .037 / .035 (σ̃: .059 / .012 /
# .014, but FD at 10 NFE 6.99 against 6.09); digits FD 10 / 15 / 20 / 50 NFE, 4,000 samples, seeds 0–1, level or
# better: 1,000 steps 6.05 / 6.16 / 6.42 / 6.64 and 6.10 / 6.03 / 6.56 / 7.18 against 6.09 / 6.21 / 6.46 / 6.65 and
# 6.12 / 6.06 / 6.59 / 7.19; 10,000 steps 2.74 / 1.44 / 1.36 / 1.10 and 2.58 / 1.39 / 1.03 / 1.10 against
# 2.72 / 1.42 / 1.37 / 1.10 and 2.59 / 1.37 / 1.02 / 1.09. HOLD loses 5–9 % at 10 NFE with it (1,000 steps), VE
# 2× (session 21).
PROCESS_DEFAULTS: dict[str, dict] = {
    "vp": {},
    "ve": {},
    "cld": {"denoise": False, "extrapolate": "log1p_sigma"},
    "hold": {"denoise": False, "stochasticity": 0.5},
}
# the fastest configuration with exact scores (docs/fast_sampling.md), as overrides of the process's defaults
# (``make benchmark-fast``'s row expint-exact; grid, order and variable stated, so they do not follow
# PROCESS_DEFAULTS; ε-steps end on z_{t_min}, whose noise the final Tweedie step removes)
DEFAULTS_EXACT = {
    name: {
        "stochasticity": 0.0,
        "prediction": "noise",
        "order": 3,
        "grid": "quadratic",
        "denoise": True,
        "extrapolate": "t",
        **extra,
    }
    for name, extra in {
        "vp": {},
        "ve": {"grid": "uniform"},
        "cld": {},
        "hold": {"prediction": "data", "order": 2},
    }.items()
}
# λ = 1 until the position block's logSNR reaches c, then λ = 0, on the process's calibrated grid where it has
# one: for exact scores and well-trained networks, not a default (on the default job's 1,000-step networks it
# costs FD at 10 NFE). Grid and c per process minimise the mean log mode-KL at 15 / 20 / 30 NFE on the
# calibration mixture (no public spec) over grid ∈ {quadratic, calibrated} × c ∈ {none, −4, −2, 0, 2}
# (docs/fast_sampling.md, session 18; ``make benchmark-fast``'s row expint-switch). VE: none beats λ = 1.
# With the final denoising step, λ = 1 and x̂_0 in t they were chosen and benchmarked with (before CLD's and HOLD's
# defaults dropped the step, HOLD's took λ = 0.5 and CLD's log(1 + σ̃)).
DEFAULTS_SWITCH = {
    name: {"denoise": True, "stochasticity": 1.0, "extrapolate": "t", **extra}
    for name, extra in {
        "vp": {"deterministic_from_logsnr": 2.0},
        "ve": {},
        "cld": {"grid": "calibrated", "deterministic_from_logsnr": -2.0},
        "hold": {"grid": "calibrated"},
    }.items()
}


def defaults_for(process_name: str) -> dict:
    """Every option's default for this process: ``DEFAULTS`` with the process's ``PROCESS_DEFAULTS`` on top."""
    return {**DEFAULTS, **PROCESS_DEFAULTS.get(process_name, {})}
