"""Fast-sampling benchmark (reports/fast_sampling.py): first-reach logic, target, and a tiny end-to-end run."""

import math

import pytest
import torch

from momentum_diffusion.reports import fast_sampling as fs


def rows_of(values, key="nfe_budget"):
    return [{key: k, "nfe_used": k, "tol": "", "mode_kl": v} for k, v in values]


def test_first_reach_is_the_smallest_nfe_reaching_the_target():
    rows = rows_of([(10, 0.5), (20, 0.011), (50, 0.009), (100, 0.002)])
    assert fs.first_reach(rows, 0.01)["nfe_budget"] == 50
    assert fs.first_reach(rows, 0.011)["nfe_budget"] == 20  # ≤, not <
    assert fs.first_reach(rows, 1.0)["nfe_budget"] == 10


def test_first_reach_none_when_never_reached():
    assert fs.first_reach(rows_of([(10, 0.5), (1000, 0.02)]), 0.01) is None
    assert fs.first_reach([], 0.01) is None


def test_nan_and_inf_never_count():
    rows = rows_of([(10, float("nan")), (20, float("inf")), (50, -float("inf")), (100, 0.001)])
    assert fs.first_reach(rows, 0.01)["nfe_budget"] == 100
    assert fs.first_reach(rows_of([(10, float("nan"))]), math.inf) is None


def test_target_is_max_of_em_and_floor():
    assert fs.target_of(0.004, 0.006) == 0.006  # EM@1000 below fresh data: the floor
    assert fs.target_of(0.02, 0.006) == 0.02
    assert fs.target_of(0.006, 0.006) == 0.006


def test_scan_stops_at_first_reach():
    calls = []

    def run_one(nfe):
        calls.append(nfe)
        return {"nfe_budget": nfe, "mode_kl": 1.0 / nfe}

    rows = fs.scan(run_one, [10, 20, 50, 100], target=0.03)
    assert calls == [10, 20, 50] and [r["nfe_budget"] for r in rows] == [10, 20, 50]
    calls.clear()
    fs.scan(run_one, [10, 20], target=1e-6)
    assert calls == [10, 20]


def head(**kw):
    return {"gmm": "g", "diffusion": "cld", "target": 0.01, "em_ref_mode_kl": 0.009, "mode_kl_floor": 0.01, **kw}


def test_summarise_orders_by_budget_and_ode_by_tolerance():
    rows = [
        head(config="em", nfe_budget=50, nfe_used=50, tol="", mode_kl=0.005),
        head(config="em", nfe_budget=20, nfe_used=20, tol="", mode_kl=0.008),  # listed late, still first
        head(config="ode-dopri5", nfe_budget=100, nfe_used=110, tol=1e-4, mode_kl=0.001),
        head(config="ode-dopri5", nfe_budget=100, nfe_used=40, tol=1e-2, mode_kl=0.5),
        head(config="ode-dopri5", nfe_budget=100, nfe_used=70, tol=1e-3, mode_kl=0.009),
        head(config="pc", nfe_budget=1000, nfe_used=999, tol="", mode_kl=float("nan")),
    ]
    _, first = fs.summarise(rows)
    assert first[("g", "cld", "em")] == 20
    assert first[("g", "cld", "ode-dopri5")] == 70  # loosest reaching tolerance, NFE it used
    assert first[("g", "cld", "pc")] is None


def test_noise_aware_target_is_reached_no_later():
    rows = [head(config="expint-o2-quadratic", nfe_budget=n, nfe_used=n, tol="", mode_kl=v, target_noise=0.012)
            for n, v in [(10, 0.3), (20, 0.0115), (50, 0.0105), (100, 0.0104)]]  # fmt: skip
    assert fs.summarise(rows)[1][("g", "cld", "expint-o2-quadratic")] is None
    assert fs.summarise(rows, noise=True)[1][("g", "cld", "expint-o2-quadratic")] == 20
    assert fs.both(None, 20) == ">1000 [≈20]" and fs.both(50, 50) == "50 (20×)"


def test_configs_follow_the_brief():
    labels = {d: [c[0] for c in fs.sampler_configs(d)] for d in fs.PROCESSES}
    assert "sscs" in labels["cld"] and "sscs" not in labels["hold"] and "lie_trotter" in labels["hold"]
    assert "sscs" not in labels["vp"] and "lie_trotter" not in labels["ve"]
    # the default, the three exact-score ones (λ = 0; switch; σ̃), 3 corrected forms, orders × grids, log_t, 2
    # stochastic without the corrector
    assert sum(lbl.startswith("expint") for lbl in labels["vp"]) == 4 + 3 + 12 + 3
    assert dict((c[0], c[2]) for c in fs.sampler_configs("ve"))["expint-sigma"] == ["sampler.extrapolate=sigma"]
    switch = {d: dict((c[0], c[2]) for c in fs.sampler_configs(d))["expint-switch"] for d in fs.PROCESSES}
    measured = ["sampler.denoise=True", "sampler.stochasticity=1.0", "sampler.extrapolate=t"]
    assert switch["ve"] == measured  # as it was measured
    cld_switch = [*measured, "sampler.grid=calibrated"]
    cld_switch.append("sampler.deterministic_from_logsnr=-2.0")
    assert switch["cld"] == cld_switch
    options = dict((c[0], c[2]) for c in fs.sampler_configs("hold"))
    assert options["expint"] == []  # the default is what samplers/expint.py says, not restated here
    assert "sampler.extrapolate=t" in options["expint-data-sde-corr"]  # historical rows: the variable they had
    pc = dict((c[0], c[2]) for c in fs.sampler_configs("ve"))["pc"]
    assert pc == ["sampler.predictor=reverse_diffusion"]
    assert dict((c[0], c[2]) for c in fs.sampler_configs("cld"))["ams"] == ["sampler.predictor=euler_maruyama"]


@pytest.fixture
def small_grid(monkeypatch):
    monkeypatch.setattr(fs, "EXPINT_GRIDS", ["quadratic"])
    monkeypatch.setattr(fs, "ODE_TOLS", [1e-2, 1e-3])
    monkeypatch.setattr(fs, "REFERENCE_NFE", 100)
    monkeypatch.setattr(fs, "FLOOR_REPEATS", 3)


def test_end_to_end_writes_csv_and_table(tmp_path, small_grid):
    fs.main(["--specs", "ring8_2d", "--processes", "cld", "--n-samples", "200", "--nfe", "10", "20",
             "--out", str(tmp_path)])  # fmt: skip
    rows = fs.read_rows(tmp_path / "results.csv")
    configs = {r["config"] for r in rows}
    assert configs == {"em", "pc", "sscs", "ams", "ode-dopri5", "expint", "expint-exact", "expint-switch",
                       "expint-sigma", "expint-noise-corr",
                       "expint-data-corr", "expint-data-sde-corr", "expint-o1-quadratic", "expint-o2-quadratic",
                       "expint-o3-quadratic", "expint-o3-quadratic-logt", "expint-sde-o2-quadratic",
                       "expint-sde-o3-quadratic"}  # fmt: skip
    for r in rows:
        assert r["gmm"] == "ring8_2d" and r["diffusion"] == "cld" and r["n_samples"] == 200
        assert r["target"] == pytest.approx(max(r["em_ref_mode_kl"], r["mode_kl_floor"]))
        assert r["target_noise"] >= r["target"]
    for label in configs - {"ode-dopri5"}:
        scanned = [r for r in rows if r["config"] == label]
        assert [r["nfe_budget"] for r in scanned] in ([10], [10, 20])
        assert all(not fs.reaches(r, r["target"]) for r in scanned[:-1])  # stopped at the first reach
    assert {r["tol"] for r in rows if r["config"] == "ode-dopri5"} <= {1e-2, 1e-3}
    table = (tmp_path / "table.md").read_text()
    assert "### ring8_2d" in table and "| cld |" in table
    _, first = fs.summarise(rows)
    line = next(ln for ln in table.splitlines() if ln.startswith("| expint-o2-quadratic |"))
    assert line.split("|")[2].strip().startswith(fs.cell(first[("ring8_2d", "cld", "expint-o2-quadratic")]))
    # --render reproduces the table from the CSV alone
    out2 = tmp_path / "again"
    fs.main(["--render", str(tmp_path / "results.csv"), "--out", str(out2)])
    assert (out2 / "table.md").read_text() == table


def test_best_grid_lists_ties():
    first = {("g", "cld", "expint-o2-uniform"): 100, ("g", "cld", "expint-o2-quadratic"): 50,
             ("g", "cld", "expint-o2-edm"): 50, ("g", "cld", "expint-o2-logsnr"): None}  # fmt: skip
    assert fs.best_of(first, list(first)) == (50, ["quadratic", "edm"])
    assert fs.best_of({("g", "cld", "expint-o1-edm"): None}, [("g", "cld", "expint-o1-edm")]) is None


def test_the_benchmarks_pin_their_process_constants_whatever_the_config_default():
    """The stored exact-score tables used CLD β = 4 and HOLD β = 5 (fast) / 8 (grid); the training configs'
    β = 3 must not leak into a rerun (it changes the prior mismatch the tables measure)."""
    from momentum_diffusion.processes import cld, hold
    from momentum_diffusion.reports.benchmark_grid import GRID_CONSTANTS, build

    t = torch.ones(1, dtype=torch.float64)

    def data_coefficient(process):
        return float(process.mean_factor(t)[0, 0])

    for constants, expected in ((fs.FAST_CONSTANTS, {"cld": cld(beta=4), "hold": hold(beta=5)}),
                                (GRID_CONSTANTS, {"cld": cld(beta=4), "hold": hold(beta=8)})):  # fmt: skip
        for name, reference in expected.items():
            process, _ = build(name, "em", [], constants)
            assert data_coefficient(process) == pytest.approx(data_coefficient(reference), rel=1e-12)
            default, _ = build(name, "em", [])
            assert data_coefficient(default) != pytest.approx(data_coefficient(reference), rel=1e-3)
