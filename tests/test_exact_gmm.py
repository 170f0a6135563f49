"""Exact Gaussian-mixture score: checked against an independent dense phase-space density."""

import math

import pytest
import torch

from momentum_diffusion.exact import BENCHMARK_DIR, ExactScore, GaussianMixture, GMMSpecError, load_gmm
from momentum_diffusion.processes import apply_blocks, cld, hold, ve, vp

F64 = torch.float64
PROCESSES = {"vp": vp, "ve": ve, "cld": cld, "hold": hold}

SPECS = {
    "std": {
        "name": "iso",
        "dim": 3,
        "components": [
            {"weight": 2.0, "mean": [1.0, 0.0, -0.5], "std": 0.3},
            {"weight": 1.0, "mean": [-1.0, 0.5, 0.0], "std": 0.6},
        ],
    },
    "diag": {
        "name": "diag",
        "dim": 3,
        "components": [
            {"weight": 0.5, "mean": [0.5, -1.0, 0.0], "diag": [0.04, 0.3, 0.1]},
            {"weight": 0.5, "mean": [-0.5, 1.0, 0.2], "diag": [0.2, 0.05, 0.5]},
        ],
    },
    "cov": {
        "name": "full",
        "dim": 3,
        "components": [
            {
                "weight": 0.7,
                "mean": [0.0, 1.0, 0.0],
                "cov": [[0.2, 0.1, 0.0], [0.1, 0.3, -0.05], [0.0, -0.05, 0.1]],
            },
            {
                "weight": 0.3,
                "mean": [1.0, -1.0, 0.5],
                "cov": [[0.5, -0.2, 0.1], [-0.2, 0.2, 0.0], [0.1, 0.0, 0.3]],
            },
        ],
    },
    "mixed": {
        "name": "mixed",
        "dim": 3,
        "components": [
            {"weight": 0.2, "mean": [1.0, 1.0, 0.0], "std": 0.2},
            {"weight": 0.3, "mean": [-1.0, 0.0, 1.0], "diag": [0.1, 0.4, 0.05]},
            {
                "weight": 0.5,
                "mean": [0.0, -1.0, -1.0],
                "cov": [[0.3, 0.1, 0.0], [0.1, 0.2, 0.05], [0.0, 0.05, 0.15]],
            },
            {"weight": 0.1, "mean": [0.5, 0.0, 0.0], "std": 0.2},  # repeated eigenvalue shared across groups
        ],
    },
}


def dense_log_prob(process, gmm, z, t):
    """log p_t(z) built directly as a (k·d)-dimensional Gaussian mixture (DESIGN.md §6), no structure used."""
    k, d = process.order, gmm.dim
    Phi, Sigma = process.sde.transition(process.tau(torch.tensor(float(t), dtype=F64)))
    eye = torch.eye(d, dtype=F64)
    Phi_full, Sigma_full = torch.kron(Phi, eye), torch.kron(Sigma, eye)
    zf = z.reshape(z.shape[0], k * d)
    logs = []
    for i in range(gmm.n_components):
        cov0 = torch.kron(process.initial_cov, eye)
        cov0[:d, :d] = gmm.covs[i]
        mean0 = torch.zeros(k * d, dtype=F64)
        mean0[:d] = gmm.means[i]
        cov = Phi_full @ cov0 @ Phi_full.T + Sigma_full
        mvn = torch.distributions.MultivariateNormal(Phi_full @ mean0, covariance_matrix=0.5 * (cov + cov.T))
        logs.append(torch.log(gmm.weights[i]) + mvn.log_prob(zf))
    return torch.logsumexp(torch.stack(logs, dim=1), dim=1)


def dense_score(process, gmm, z, t):
    z = z.detach().to(F64).clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(dense_log_prob(process, gmm, z, t).sum(), z)
    return grad[:, -1]


def marginal_points(process, gmm, t, n, seed):
    """Typical points of p_t (forward-perturbed data) plus a few far-away ones."""
    gen = torch.Generator().manual_seed(seed)
    x0 = gmm.sample(n, gen).to(F64)
    z, _, _ = process.perturb(x0, torch.tensor(float(t), dtype=F64), gen)
    z[:4] += 3.0 * torch.randn(z[:4].shape, generator=gen, dtype=F64)
    return z


@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("proc", list(PROCESSES))
def test_score_equals_autograd_of_dense_density(proc, spec):
    process, gmm = PROCESSES[proc](), GaussianMixture.from_spec(SPECS[spec])
    exact = ExactScore(process, gmm)
    for t in (process.t_min, 1e-3, 0.05, 0.4, process.t_max):
        z = marginal_points(process, gmm, t, 24, seed=1)
        ref = dense_score(process, gmm, z, t)
        got = exact(z, t)
        assert got.shape == (24, gmm.dim) and got.dtype == F64
        torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-8 * float(ref.abs().max()))
        torch.testing.assert_close(exact.log_prob(z, t), dense_log_prob(process, gmm, z, t), rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("proc", list(PROCESSES))
def test_per_sample_times(proc):
    process, gmm = PROCESSES[proc](), GaussianMixture.from_spec(SPECS["mixed"])
    exact = ExactScore(process, gmm, chunk_elems=300)  # force several chunks
    times = torch.tensor([process.t_min, 0.01, 0.2, 0.2, 0.7, 1.0, 0.05, 0.5])
    z = marginal_points(process, gmm, 0.3, len(times), seed=2)
    got = exact(z, times)
    ref = torch.cat([dense_score(process, gmm, z[i : i + 1], float(times[i])) for i in range(len(times))])
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-8 * float(ref.abs().max()))
    # a (B,) tensor of one repeated time takes the scalar path and agrees with it
    torch.testing.assert_close(exact(z, torch.full((len(times),), 0.2, dtype=F64)), exact(z, 0.2))


def test_autograd_of_own_log_prob_and_dtype():
    process, gmm = hold(), GaussianMixture.from_spec(SPECS["mixed"])
    exact = ExactScore(process, gmm)
    z = marginal_points(process, gmm, 0.1, 16, seed=3).requires_grad_(True)
    (grad,) = torch.autograd.grad(exact.log_prob(z, 0.1).sum(), z)
    torch.testing.assert_close(exact(z.detach(), 0.1), grad[:, -1])
    out = exact(z.detach().float(), 0.1)
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match="z must have shape"):
        exact(torch.zeros(4, 2, 3), 0.1)


@pytest.mark.parametrize("proc", list(PROCESSES))
def test_single_gaussian_is_the_kernel_score(proc):
    """x_0 ~ N(m, diag(c)): coordinate j of z_t is N(Φ(m_j, 0, …), kernel covariance with Σ_0[0,0] = c_j)."""
    process = PROCESSES[proc]()
    k, d = process.order, 3
    m, c = torch.tensor([0.5, -1.0, 2.0], dtype=F64), torch.tensor([0.09, 0.5, 1.3], dtype=F64)
    gmm = GaussianMixture([1.0], m[None], torch.diag(c)[None])
    exact = ExactScore(process, gmm)
    z = torch.randn(32, k, d, generator=torch.Generator().manual_seed(4), dtype=F64)
    for t in (process.t_min, 0.1, 0.9):
        expected = torch.empty(32, d, dtype=F64)
        for j in range(d):
            init = process.initial_cov.clone()
            init[0, 0] = c[j]
            Phi, cov, _ = process.kernel(torch.tensor(t, dtype=F64), initial_cov=init)
            mean = Phi[:, 0] * m[j]
            expected[:, j] = -torch.linalg.solve(cov, (z[:, :, j] - mean).T)[-1]
        torch.testing.assert_close(exact(z, t), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("proc", ["vp", "cld", "hold"])
def test_score_at_T_is_close_to_the_prior_score(proc):
    """At t = T, P_ij − Π = Φ (D_ij − Π) Φᵀ, D_ij = diag(λ_ij, Σ_0,aux), Π = stationary = prior covariance.

    Per component, |s_i − s_Π| ≤ ‖P⁻¹‖ (‖Φ‖² max‖D − Π‖ ‖Π⁻¹‖ ‖z‖ + ‖φ‖ ‖m_i‖) (rotation-invariant norms), and
    the mixture score is a convex combination of the s_i: the test checks this bound, and that it is small.
    """
    process, gmm = PROCESSES[proc](), load_gmm("anisotropic_4d")
    Pi = process.prior_cov
    torch.testing.assert_close(process.sde.stationary_cov, Pi)
    T = torch.tensor(process.t_max, dtype=F64)
    Phi, _ = process.sde.transition(process.tau(T))
    norm_Phi = float(torch.linalg.matrix_norm(Phi, ord=2))
    lams = torch.linalg.eigvalsh(gmm.covs).flatten()
    D = process.initial_cov.expand(len(lams), -1, -1).clone()
    D[:, 0, 0] = lams
    dist = float(torch.linalg.matrix_norm(D - Pi, ord=2).max())
    inv_Pi = float(torch.linalg.matrix_norm(torch.linalg.inv(Pi), ord=2))
    min_eig_P = float(torch.linalg.eigvalsh(Pi)[0]) - norm_Phi**2 * dist
    assert min_eig_P > 0
    z = marginal_points(process, gmm, process.t_max, 256, seed=5)[4:]
    prior_score = -apply_blocks(torch.linalg.inv(Pi), z)[:, -1]
    got = ExactScore(process, gmm)(z, process.t_max)
    m_max = float(gmm.means.norm(dim=1).max())
    bound = (norm_Phi**2 * dist * inv_Pi * z.flatten(1).norm(dim=1) + norm_Phi * m_max) / min_eig_P
    err = (got - prior_score).norm(dim=1)
    assert bool((err <= bound * (1 + 1e-6) + 1e-12).all())
    assert float(bound.max()) < 0.05 * float(prior_score.norm(dim=1).median())  # the check is not vacuous


def test_structure_paths_on_benchmark_mixture():
    """mixture10_32d takes the isotropic (Gram) path; the same means with diagonal or full covariances take
    the other two; each is checked against the dense density on a 4-D slice (dense 12×12 for HOLD)."""
    gmm, process = load_gmm("mixture10_32d"), hold()
    assert [type(g).__name__ for g in ExactScore(process, gmm)._groups] == ["_IsotropicGroup"]
    rot = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(6), dtype=F64))[0]
    spread = torch.linspace(0.5, 2.0, 4, dtype=F64)
    m = gmm.means[:, :4]
    variants = {
        "_IsotropicGroup": gmm.covs[:, :4, :4],
        "_DiagonalGroup": gmm.covs[:, :4, :4] * spread,
        "_FullGroup": (rot * spread) @ rot.T * gmm.covs[:, :1, :1],
    }
    z = marginal_points(process, GaussianMixture(gmm.weights, m, variants["_IsotropicGroup"]), 0.2, 32, seed=7)
    for group, covs in variants.items():
        sub = GaussianMixture(gmm.weights, m, covs)
        exact = ExactScore(process, sub)
        assert [type(g).__name__ for g in exact._groups] == [group]
        ref = dense_score(process, sub, z, 0.2)
        torch.testing.assert_close(exact(z, 0.2), ref, rtol=1e-8, atol=1e-8 * float(ref.abs().max()))


# ---- the mixture itself -------------------------------------------------------------------------------
def test_benchmark_specs_load():
    names = sorted(p.stem for p in BENCHMARK_DIR.glob("*.yaml"))
    assert {"ring8_2d", "anisotropic_4d", "mixture10_32d"} <= set(names)
    for name in names:
        gmm = load_gmm(name)
        assert gmm.name == name
        assert math.isclose(float(gmm.weights.sum()), 1.0)
        assert gmm.means.shape == (gmm.n_components, gmm.dim)
    assert load_gmm(BENCHMARK_DIR / "ring8_2d.yaml").n_components == 8
    with pytest.raises(FileNotFoundError, match="available: .*ring8_2d"):
        load_gmm("no_such_spec")


def test_sample_and_log_prob():
    gmm = GaussianMixture.from_spec(SPECS["mixed"])
    x = gmm.sample(200_000, torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and x.shape == (200_000, 3)
    torch.testing.assert_close(x, gmm.sample(200_000, torch.Generator().manual_seed(0)))
    torch.testing.assert_close(x.double().mean(0), gmm.mean(), atol=0.01, rtol=0)
    torch.testing.assert_close(torch.cov(x.double().T), gmm.covariance(), atol=0.02, rtol=0)
    pts = torch.randn(50, 3, dtype=F64)
    dense = torch.logsumexp(
        torch.stack(
            [
                torch.log(w) + torch.distributions.MultivariateNormal(m, c).log_prob(pts)
                for w, m, c in zip(gmm.weights, gmm.means, gmm.covs)
            ],
            dim=1,
        ),
        dim=1,
    )
    torch.testing.assert_close(gmm.log_prob(pts), dense)
    assert gmm.log_prob(pts.float()).dtype == torch.float32


def _spec(**component):
    base = {"weight": 1.0, "mean": [0.0, 0.0], "std": 1.0}
    base.update(component)
    base = {k: v for k, v in base.items() if v is not None}
    return {"name": "bad", "dim": 2, "components": [{"weight": 1.0, "mean": [1.0, 1.0], "std": 0.5}, base]}


@pytest.mark.parametrize(
    "spec, message",
    [
        (_spec(cov=[[1.0, 2.0], [2.0, 1.0]], std=None), "component 1: cov is not positive definite"),
        (_spec(cov=[[1.0, 0.5], [0.0, 1.0]], std=None), "component 1: cov is not symmetric"),
        (_spec(cov=[[1.0, 0.0]], std=None), "component 1: cov must be a 2×2 matrix"),
        (_spec(weight=0.0), "component 1: weight must be > 0"),
        (_spec(weight=-1), "component 1: weight must be > 0"),
        (_spec(mean=[1.0, 2.0, 3.0]), "component 1: mean has 3 entries, dim is 2"),
        (_spec(std=-0.1), "component 1: std must be > 0"),
        (_spec(diag=[1.0], std=None), "component 1: diag has 1 entries, dim is 2"),
        (_spec(diag=[1.0, 0.0], std=None), "component 1: diag entries"),
        (_spec(diag=[1.0, 1.0]), "component 1: give exactly one of std, diag, cov \\(got std, diag\\)"),
        (_spec(std=None), "component 1: give exactly one of std, diag, cov \\(got none\\)"),
        (_spec(sd=1.0), "component 1: unknown key\\(s\\) 'sd'"),
        (_spec(weight=None), "component 1: missing 'weight'"),
        (_spec(mean=None), "component 1: missing 'mean'"),
        (_spec(mean=["a", 1.0]), "component 1: mean must contain only finite numbers"),
    ],
)
def test_spec_validation_component_errors(spec, message):
    with pytest.raises(GMMSpecError, match=message):
        GaussianMixture.from_spec(spec)


def test_spec_validation_top_level_errors(tmp_path):
    good = {"name": "ok", "dim": 1, "components": [{"weight": 1, "mean": [0.0], "std": 1}]}
    for key in ("name", "dim", "components"):
        bad = {k: v for k, v in good.items() if k != key}
        with pytest.raises(GMMSpecError, match=f"missing required field '{key}'"):
            GaussianMixture.from_spec(bad)
    with pytest.raises(GMMSpecError, match="unknown key\\(s\\) 'dims'"):
        GaussianMixture.from_spec({**good, "dims": 2})
    with pytest.raises(GMMSpecError, match="dim must be a positive integer"):
        GaussianMixture.from_spec({**good, "dim": 0})
    with pytest.raises(GMMSpecError, match="components must be a non-empty list"):
        GaussianMixture.from_spec({**good, "components": []})
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndim: 1\ncomponents:\n- weight: 1\n  mean: [0]\n  std: 0\n")
    with pytest.raises(GMMSpecError, match="bad.yaml: component 0: std must be > 0"):
        GaussianMixture.load_spec(path)
    path.write_text("name: x\ndescription: ok\ndim: 1\ncomponents:\n- weight: 3\n  mean: [0]\n  diag: [2.0]\n")
    gmm = GaussianMixture.load_spec(path)
    assert float(gmm.weights[0]) == 1.0 and float(gmm.covs[0, 0, 0]) == 2.0
