"""The bad-input battery (issue 18): every bad command line through the real entry points in one process
(tests/cli_battery.py), and the checks of its results; test_cli.py runs the default battery in its own battery
process, test_cli.py's `…_all_entry_points` the full one (slow)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from momentum_diffusion.lightning.checkpointing import load_checkpoint
from tiny_training import CLI_TRAIN, CONFIGS, fit, tiny_config


# The default battery runs in test_cli.py's battery process (with that file's command lines and NONFINITE_CLI,
# one interpreter start-up for all): test_cli.py's test_bad_inputs_each_give_one_line_naming_the_key_and_lose_
# nothing and test_cli_nonfinite_training_stops_with_one_line_and_a_loadable_checkpoint call the checks below.
def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def bad_input_battery(tmp_path: Path, full: bool, extra=()) -> dict:
    """Items 2, 3, 5, 7 (stale temporaries), 9, 10 and the one-line section of issue 18, through the real
    entry points (their __main__ path: check_output_dir, then Hydra), all in one subprocess, plus the
    ``extra`` cases (results under "extra"). The default run takes one case per item and key (each case costs
    a Hydra composition, ≈0.5 s); the slow variant adds the same checks through the other entry points.
    Returns what :func:`check_bad_input_battery` asserts."""
    from cli_battery import run_battery
    from momentum_diffusion.cli.run_dir import lock_run_dir, release_run_dir

    gmm = CONFIGS["gmm"]
    fit(tiny_config("gmm"), tmp_path / "run", 2, every_n=0)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=False)
    state["state_dict"][next(k for k in state["state_dict"] if k.startswith("ema."))].view(-1)[0] = float("nan")
    torch.save(state, tmp_path / "nan.ckpt")
    for k, v in state["state_dict"].items():  # finite weights whose samples are not (1e30 x the EMA weights)
        if k.startswith("ema.") and v.is_floating_point():
            v.nan_to_num_(0.0).mul_(1e30)
    torch.save(state, tmp_path / "huge.ckpt")
    (tmp_path / "huge_mean.yaml").write_text(
        "name: huge\ndim: 2\ncomponents:\n- weight: 1\n  mean: [1e300, 0]\n  std: 1\n"
    )
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "config.yaml").write_text("the other run's config\n")
    stale = tmp_path / "stale"
    (stale / "checkpoints").mkdir(parents=True)
    (stale / "checkpoints" / ".last.ckpt.tmp999999999").write_bytes(b"partial")
    spaced = tmp_path / "x y ü" / "out"
    unwritable = tmp_path / "unwritable"  # every save fails: last.ckpt is a directory (os.replace: EISDIR)
    (unwritable / "checkpoints" / "last.ckpt").mkdir(parents=True)
    out = f"hydra.run.dir={tmp_path / 'out'}"
    cases = [  # (script, args, what the one line must contain)
        ("train.py", [*gmm, f"data.spec={tmp_path}/nosuchdir/ring8_2d.yaml", out], "nosuchdir/ring8_2d.yaml"),  # 2
        ("train.py", [*gmm, f"hydra.run.dir={locked}"], f"in use by process {os.getpid()}"),  # 3
        ("sample.py", [f"ckpt={tmp_path / 'nan.ckpt'}", out], "non-finite weights (ema."),  # 5
        ("train.py", [*gmm, f"ckpt_path={tmp_path / 'nan.ckpt'}", out], "non-finite weights"),  # 5
        ("evaluate.py", [f"ckpt={tmp_path / 'huge.ckpt'}", "sampler.nfe=4", "n_samples=4", out], "non-finite"),  # 5
        ("train.py", [*gmm, "seed=abc", f"hydra.run.dir={stale}"], "seed"),  # 7: stale temporary removed
        ("sample.py", [f"ckpt={ckpt}", "n_samples=0", f'hydra.run.dir="{spaced}"'], "n_samples"),  # 9
        ("train.py", [*gmm, "model.hidden=64", f"ckpt_path={ckpt}", out], "model.hidden: checkpoint 32 vs config 64"),
        (
            "train.py",
            [*gmm, "diffusion.beta=8", f"ckpt_path={ckpt}", out],
            "diffusion.beta: checkpoint 3.0 vs config 8",
        ),
        ("train.py", [*gmm, "model.hidden=64", "allow_identity_change=true", f"ckpt_path={ckpt}", out], "model.hidden"),
        ("train.py", [*gmm, "seed=1.5", out], "seed"),
        ("sample.py", [f"ckpt={ckpt}", "seed=1.5", out], "seed"),
        ("train.py", [*gmm, "optim.lr=abc", out], "optim.lr"),
        ("train.py", [*gmm, "optim.lr=1e41", out], "optim.lr"),
        ("train.py", [*gmm, "optim.ema_decay=2", out], "optim.ema_decay"),
        ("train.py", [*gmm, "optim.max_bad_steps=0", out], "optim.max_bad_steps"),
        ("train.py", [*gmm, "threads=-1", out], "threads"),
        ("sample.py", [f"ckpt={ckpt}", "device=foo", out], "device"),
        ("benchmark.py", ["batch_size=0", out], "batch_size"),
        ("sample.py", [out], "ckpt"),
        ("benchmark.py", [f"gmm={tmp_path / 'huge_mean.yaml'}", "sampler.nfe=5", out], "mean"),
        ("benchmark.py", ["sampler.nfe=[]", out], "sampler.nfe"),  # the NFE knob (issue 14) validates lists too
    ]
    if not torch.cuda.is_available():
        cases.append(("sample.py", [f"ckpt={ckpt}", "device=cuda", out], "device=cuda"))
    hydra_rejects = [  # Hydra's own composition errors (several lines, no traceback), before any work
        ("train.py", [*gmm, "nonexistent_key=1", f"hydra.run.dir={tmp_path / 'rejected'}"], "nonexistent_key"),
    ]
    failed_save = [  # item 7 through the CLI: training starts (Lightning's warnings), the first save fails
        (
            "train.py",
            [
                *gmm,
                "trainer.max_steps=2",
                "callbacks.checkpoint.every_n_train_steps=1",
                "callbacks.sample_evaluation=null",
                "callbacks.progress=null",
                f"hydra.run.dir={unwritable}",
            ],
            "error: could not write checkpoint",
        ),
    ]
    if full:
        cases += [
            ("benchmark.py", [f"gmm={tmp_path}/nosuchdir/ring8_2d.yaml", "sampler.nfe=5", out], "does not exist"),
            ("evaluate.py", [f"ckpt={tmp_path / 'nan.ckpt'}", out], "non-finite weights (ema."),
            ("sample.py", [f"ckpt={tmp_path / 'huge.ckpt'}", "sampler.nfe=4", "n_samples=4", out], "4 of 4 samples"),
            ("train.py", [*gmm, "seed=-1", out], "seed"),
            ("benchmark.py", ["seed=1.5", out], "seed"),
            ("evaluate.py", [f"ckpt={ckpt}", "seed=abc", out], "seed"),
            ("benchmark.py", ["threads=-1", out], "threads"),
            ("evaluate.py", [f"ckpt={ckpt}", "device=foo", out], "device"),
            ("benchmark.py", ["batch_size=-1", out], "batch_size"),
            ("evaluate.py", [f"ckpt={ckpt}", "sampler.nfe=[]", out], "sampler.nfe"),
            ("evaluate.py", [f"ckpt={ckpt}", "nfe=[]", out], "sampler.nfe"),  # evaluate.py's alias of sampler.nfe
            ("evaluate.py", [out], "ckpt"),
        ]
        hydra_rejects += [
            ("benchmark.py", ["nfe=5", out], "'nfe'"),  # the old top-level knob is gone: sampler.nfe
        ]
    before = _digest(ckpt)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    lock_run_dir(locked)  # another run holds this directory
    try:
        results = run_battery(cases + hydra_rejects + failed_save + list(extra), tmp_path, cwd=cwd)
    finally:
        release_run_dir(locked)
    n = len(cases) + len(hydra_rejects) + len(failed_save)
    return dict(tmp_path=tmp_path, cases=cases, hydra_rejects=hydra_rejects, failed_save=failed_save,
                results=results[:n], extra=results[n:], ckpt=ckpt, before=before, locked=locked, stale=stale,
                unwritable=unwritable, cwd=cwd)  # fmt: skip


def check_bad_input_battery(b: dict) -> None:
    cases, hydra_rejects, failed_save, results = b["cases"], b["hydra_rejects"], b["failed_save"], b["results"]
    tmp_path, locked, stale, unwritable, cwd = b["tmp_path"], b["locked"], b["stale"], b["unwritable"], b["cwd"]
    failures = []
    for (script, args, expected), r in zip(cases, results):
        lines = r["stderr"].strip().splitlines()
        ok = r["code"] != 0 and len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0]
        if not ok:
            failures.append(f"{script} {' '.join(args)}: code {r['code']}\n{r['stderr'][-1500:]}")
    assert not failures, "\n\n".join(failures)
    for (script, args, expected), r in zip(hydra_rejects, results[len(cases) :]):
        assert r["code"] != 0 and expected in r["stderr"] and "Traceback" not in r["stderr"], (script, args, r)
    r = results[-1]
    assert r["code"] == 2 and r["stderr"].strip().splitlines()[-1].startswith(failed_save[0][2]), r
    assert "Traceback" not in r["stderr"] and not list((unwritable / "checkpoints").glob(".*tmp*"))
    assert _digest(b["ckpt"]) == b["before"]  # nothing lost
    assert (locked / "config.yaml").read_text() == "the other run's config\n" and not (locked / ".hydra").exists()
    assert not (stale / "checkpoints" / ".last.ckpt.tmp999999999").exists()
    assert list(cwd.iterdir()) == []  # item 9: no stray './"/tmp/…' tree from a quoted directory
    assert not (tmp_path / "x y ü").exists() and not (tmp_path / "rejected").exists()  # rejected: no directory
    assert not (tmp_path / "out").exists()


# lr 1e30: every update would blow the weights up (1e28); each is undone and counted as a bad step
NONFINITE_CLI = [*CLI_TRAIN, "trainer.max_steps=30", "optim.lr=1e30", "optim.max_bad_steps=3",
                 "callbacks.checkpoint.every_n_train_steps=1"]  # fmt: skip


def check_nonfinite_cli(r: dict, run_dir: Path) -> None:
    """The NONFINITE_CLI run (result ``r`` of the battery, run directory ``run_dir``): one line, the number of
    bad steps and the last good step named, one warning per skipped step, a finite loadable checkpoint."""
    code, err = r["code"], r["stderr"]
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code != 0 and "Traceback" not in err
    assert lines[-1].startswith("error: 3 consecutive bad steps"), err[-2000:]
    assert "The weights are those after step 0," in lines[-1]  # every update was undone
    skipped = [line for line in lines if line.endswith("step skipped")]  # one warning per skipped step
    assert len(skipped) == 3 and all("after the update" in line or "exploding update" in line for line in skipped)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert all(torch.isfinite(v).all() and v.abs().max() < 100 for v in ckpt["state_dict"].values())
