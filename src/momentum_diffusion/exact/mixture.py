"""Gaussian-mixture data specs (benchmarks/gmm/README.md): loading, validation, sampling, densities."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
import yaml

from ..processes.core import F64

LOG_2PI = math.log(2.0 * math.pi)

#: the bundled example specs, package data (in the repository ``exact/specs`` is a symlink to ``benchmarks/gmm/``)
BENCHMARK_DIR = Path(__file__).resolve().parent / "specs"

_TOP_KEYS = ("name", "description", "dim", "components")
_COMPONENT_KEYS = ("weight", "mean", "std", "diag", "cov")


class GMMSpecError(ValueError):
    """An invalid Gaussian-mixture spec; the message names the offending field."""


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _number_list(value, what: str, dim: int, where: str) -> list[float]:
    if not isinstance(value, (list, tuple)):
        raise GMMSpecError(f"{where}{what} must be a list of {dim} numbers")
    if len(value) != dim:
        raise GMMSpecError(f"{where}{what} has {len(value)} entries, dim is {dim}")
    if not all(_is_number(v) for v in value):
        raise GMMSpecError(f"{where}{what} must contain only finite numbers")
    return [float(v) for v in value]


class GaussianMixture:
    """Σ_i w_i N(m_i, C_i) in d dimensions, stored in float64.

    ``weights`` (K,) are normalised; ``means`` (K, d); ``covs`` (K, d, d) symmetric positive definite.
    """

    def __init__(self, weights, means, covs, name: str = "gmm", description: str = ""):
        self.weights = torch.as_tensor(weights, dtype=F64).reshape(-1)
        self.means = torch.as_tensor(means, dtype=F64)
        self.covs = torch.as_tensor(covs, dtype=F64)
        K = self.weights.shape[0]
        if self.means.dim() != 2 or self.means.shape[0] != K:
            raise ValueError(f"means must be (K={K}, d), got {tuple(self.means.shape)}")
        d = self.means.shape[1]
        if self.covs.shape != (K, d, d):
            raise ValueError(f"covs must be (K={K}, {d}, {d}), got {tuple(self.covs.shape)}")
        if not bool((self.weights > 0).all()):
            raise ValueError("weights must be > 0")
        self.weights = self.weights / self.weights.sum()
        self.covs = 0.5 * (self.covs + self.covs.transpose(-1, -2))
        chol, info = torch.linalg.cholesky_ex(self.covs)
        if bool((info != 0).any()):
            bad = int(torch.nonzero(info)[0, 0])
            raise ValueError(f"component {bad}: cov is not positive definite")
        self.chol = chol
        self.name = name
        self.description = description

    # ---- construction from a spec ----------------------------------------------------------------
    @classmethod
    def from_spec(cls, spec: Mapping, source: str | None = None) -> GaussianMixture:
        """Build from the YAML format of ``benchmarks/gmm/README.md``; GMMSpecError names a bad field."""
        prefix = f"{source}: " if source else ""
        name, description, dim, components = _spec_fields(spec, prefix)
        parsed = [_component(comp, dim, f"{prefix}component {i}: ") for i, comp in enumerate(components)]
        weights, means, covs = zip(*parsed)
        return cls(list(weights), list(means), torch.stack(covs), name=name.strip(), description=description)

    @classmethod
    def load_spec(cls, path: str | Path) -> GaussianMixture:
        """Load a YAML spec file (see ``resolve_spec`` for bare names like ``ring8_2d``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"GMM spec not found: {path}")
        try:
            spec = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise GMMSpecError(f"{path}: not valid YAML ({err})") from err
        return cls.from_spec(spec, source=str(path))

    # ---- basic properties ------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.weights.shape[0]

    def __repr__(self) -> str:
        return f"GaussianMixture(name={self.name!r}, K={self.n_components}, dim={self.dim})"

    def mean(self) -> torch.Tensor:
        """Mean of the mixture, (d,) float64."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Covariance of the mixture, (d, d) float64 (law of total covariance)."""
        mu = self.mean()
        dev = self.means - mu
        return torch.einsum("k,kij->ij", self.weights, self.covs) + torch.einsum("k,ki,kj->ij", self.weights, dev, dev)

    # ---- sampling and density ----------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n i.i.d. draws, (n, d) float32. Deterministic given ``generator``."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=F64)
        x = torch.empty(n, self.dim, dtype=F64)
        for i in range(self.n_components):
            idx = comp == i
            x[idx] = self.means[i] + eps[idx] @ self.chol[i].T
        return x.to(torch.float32)

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log w_i + log N(x; m_i, C_i) for every component: (n, K) float64."""
        x = torch.as_tensor(x).to(F64)
        diff = x[:, None, :] - self.means[None]  # (n, K, d)
        white = torch.linalg.solve_triangular(self.chol[None], diff.unsqueeze(-1), upper=False).squeeze(-1)
        logdet = 2.0 * torch.log(torch.diagonal(self.chol, dim1=-2, dim2=-1)).sum(-1)
        return torch.log(self.weights) - 0.5 * ((white**2).sum(-1) + logdet + self.dim * LOG_2PI)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), (n,), computed in float64 and returned in x's floating dtype."""
        x = torch.as_tensor(x)
        out = torch.logsumexp(self.component_log_prob(x), dim=-1)
        return out.to(x.dtype) if x.is_floating_point() else out


MAX_SCALE = 1e6  # |mean| and std bound: float32 samples and their squares (metrics) must stay finite


def resolve_spec(spec: str | Path) -> Path:
    """A spec path, or a bare name (``ring8_2d`` / ``ring8_2d.yaml``) looked up in ``BENCHMARK_DIR``.

    Only a bare name looks in the bundled specs: a path with a directory part that does not exist is an
    error (``/home/me/specs/ring8_2d.yaml`` must never silently load the bundled ``ring8_2d``)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise FileNotFoundError(f"GMM spec {str(spec)!r} is not a file")
    if len(Path(str(spec)).parts) > 1 or str(spec).startswith("~"):
        raise FileNotFoundError(
            f"GMM spec file {str(spec)!r} does not exist (only a bare name such as 'ring8_2d' picks a bundled spec)"
        )
    name = path.name if path.suffix in (".yaml", ".yml") else path.name + ".yaml"
    candidate = BENCHMARK_DIR / name
    if candidate.is_file():
        return candidate
    available = sorted(p.stem for p in BENCHMARK_DIR.glob("*.yaml")) if BENCHMARK_DIR.is_dir() else []
    raise FileNotFoundError(
        f"GMM spec {str(spec)!r} is neither a file nor a name in {BENCHMARK_DIR} "
        f"(available: {', '.join(available) or 'none'})"
    )


def load_gmm(spec: str | Path | Mapping | GaussianMixture) -> GaussianMixture:
    """Accept a GaussianMixture, a spec dict, a YAML path or a bare benchmark name."""
    if isinstance(spec, GaussianMixture):
        return spec
    if isinstance(spec, Mapping):
        return GaussianMixture.from_spec(spec)
    return GaussianMixture.load_spec(resolve_spec(spec))


def _spec_fields(spec, prefix: str) -> tuple[str, str, int, list]:
    """The top-level fields of a spec: (name, description, dim, components), each checked."""

    def fail(msg):
        raise GMMSpecError(prefix + msg)

    if not isinstance(spec, Mapping):
        fail("a GMM spec must be a mapping with keys name, dim, components")
    unknown = [str(key) for key in spec if key not in _TOP_KEYS]
    if unknown:
        fail(f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(_TOP_KEYS)})")
    for key in ("name", "dim", "components"):
        if key not in spec:
            fail(f"missing required field '{key}'")
    name = spec["name"]
    if not isinstance(name, str) or not name.strip():
        fail("name must be a non-empty string")
    description = spec.get("description", "") or ""
    if not isinstance(description, str):
        fail("description must be a string")
    dim = spec["dim"]
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        fail(f"dim must be a positive integer, got {dim!r}")
    components = spec["components"]
    if not isinstance(components, (list, tuple)) or len(components) == 0:
        fail("components must be a non-empty list")
    return name, description, dim, components


def _component(comp, dim: int, where: str) -> tuple[float, list[float], torch.Tensor]:
    """(weight, mean, covariance) of one spec component, each checked; ``where`` prefixes every message."""
    if not isinstance(comp, Mapping):
        raise GMMSpecError(f"{where}must be a mapping with keys weight, mean and one of std/diag/cov")
    unknown = [str(key) for key in comp if key not in _COMPONENT_KEYS]
    if unknown:
        raise GMMSpecError(
            f"{where}unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(_COMPONENT_KEYS)})"
        )
    for key in ("weight", "mean"):
        if key not in comp:
            raise GMMSpecError(f"{where}missing '{key}'")
    w = comp["weight"]
    if not _is_number(w) or w <= 0:
        raise GMMSpecError(f"{where}weight must be > 0 (got {w!r})")
    mean = _number_list(comp["mean"], "mean", dim, where)
    if max(abs(m) for m in mean) > MAX_SCALE:
        raise GMMSpecError(
            f"{where}mean entries must be at most {MAX_SCALE:g} in magnitude (got {max(mean, key=abs):g}); "
            "the samplers and metrics work in float32: rescale the data"
        )
    given = [key for key in ("std", "diag", "cov") if key in comp]
    if len(given) != 1:
        raise GMMSpecError(f"{where}give exactly one of std, diag, cov (got {', '.join(given) if given else 'none'})")
    cov = _component_cov(comp, given[0], dim, where)
    if float(cov.diagonal().max()) > MAX_SCALE**2:
        raise GMMSpecError(
            f"{where}standard deviations must be at most {MAX_SCALE:g} (float32 samplers and metrics): rescale the data"
        )
    return float(w), mean, cov


def _component_cov(comp, kind: str, dim: int, where: str) -> torch.Tensor:
    """The covariance of a component given as ``std``, ``diag`` or a full ``cov`` (symmetric positive definite)."""
    if kind == "std":
        std = comp["std"]
        if not _is_number(std) or std <= 0:
            raise GMMSpecError(f"{where}std must be > 0 (got {std!r})")
        return torch.eye(dim, dtype=F64) * float(std) ** 2
    if kind == "diag":
        diag = _number_list(comp["diag"], "diag", dim, where)
        if min(diag) <= 0:
            raise GMMSpecError(f"{where}diag entries (variances) must be > 0")
        return torch.diag(torch.tensor(diag, dtype=F64))
    rows = comp["cov"]
    if (
        not isinstance(rows, (list, tuple))
        or len(rows) != dim
        or not all(isinstance(r, (list, tuple)) and len(r) == dim for r in rows)
    ):
        raise GMMSpecError(f"{where}cov must be a {dim}×{dim} matrix (list of {dim} rows)")
    if not all(_is_number(v) for r in rows for v in r):
        raise GMMSpecError(f"{where}cov must contain only finite numbers")
    cov = torch.tensor(rows, dtype=F64)
    scale = float(cov.abs().max())
    if float((cov - cov.T).abs().max()) > 1e-8 * max(scale, 1.0):
        raise GMMSpecError(f"{where}cov is not symmetric")
    cov = 0.5 * (cov + cov.T)
    if float(torch.linalg.eigvalsh(cov).min()) <= 1e-12 * max(scale, 1e-300):
        raise GMMSpecError(f"{where}cov is not positive definite")
    return cov
