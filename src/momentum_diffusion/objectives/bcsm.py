"""BCSM: block-coordinate score matching for HOLD (Shi & Liu, arXiv 2404.12814).

The network sees (q, p, s) and predicts the noise of the acceleration block s; score = −ε̂ / (L_t)_33, with
L_t the Cholesky factor of the kernel covariance (p_0, s_0 marginalised analytically). The paper's exact
weighting is not published in a form we could confirm; `eps` (λ = (L_t)_33²) is the default, `likelihood`
and the mixed score are options. Also used for the n-th order chains (order ≥ 3)."""

from .noise_prediction import NoisePredictionObjective


class BCSM(NoisePredictionObjective):
    name = "bcsm"
    orders = (3, 1_000)
