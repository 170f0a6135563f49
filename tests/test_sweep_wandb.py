"""W&B logging next to the always-on CSV log: config keys, images and per-NFE metrics (an offline run is slow)."""

from __future__ import annotations

import pytest

from helpers import cli_env, compose_config, run_script


def test_wandb_logger_config_keeps_csv_and_takes_project_entity_tags_group_offline():
    cfg = compose_config(
        "train", "logger=wandb", "logger.wandb.entity=lab", "logger.wandb.group=g", "logger.wandb.tags=[a,b]"
    )
    assert cfg.logger.csv._target_.endswith("CSVLogger")
    w = cfg.logger.wandb
    assert (w.project, w.entity, w.group, list(w.tags)) == ("momentum_diffusion", "lab", "g", ["a", "b"])
    assert w.offline is False


def test_csv_logger_is_added_when_none_is_configured(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from momentum_diffusion.cli.launch import with_csv_logger

    class Other:
        pass

    loggers = with_csv_logger([Other()], tmp_path)
    assert isinstance(loggers[0], CSVLogger) and isinstance(loggers[1], Other)
    assert with_csv_logger(loggers, tmp_path) is loggers


def test_images_go_to_loggers_that_take_images(tmp_path):
    from momentum_diffusion.lightning.callbacks import log_images, plot_metric_vs_nfe

    rows = [{"step": 5, "nfe_budget": n, "nfe_used": n, "sw2": 1.0 / n, "mode_kl": 2.0 / n} for n in (4, 8)]
    plot = plot_metric_vs_nfe(rows, tmp_path / "metric_vs_nfe.png")
    assert plot is not None and plot.is_file()

    class ImageLogger:
        def __init__(self):
            self.calls = []

        def log_image(self, key, images, step=None):
            self.calls.append((key, images, step))

    class MetricsOnly:
        pass

    logger = ImageLogger()
    log_images([logger, MetricsOnly()], {"eval/metric_vs_nfe": plot, "samples/nfe4": tmp_path / "missing.png"}, 5)
    assert logger.calls == [("eval/metric_vs_nfe", [str(plot)], 5)]


@pytest.mark.slow
def test_offline_wandb_run_logs_per_nfe_metrics_images_and_csv(tmp_path):
    pytest.importorskip("wandb")
    args = [
        "logger=wandb",
        "logger.wandb.offline=true",
        "logger.wandb.group=test",
        "data=gmm",
        "data.n_train=1024",
        "data.batch_size=128",
        "diffusion=vp",
        "model.hidden=32",
        "trainer.max_steps=6",
        "sampler.nfe=[4,8]",
        "callbacks.sample_evaluation.n_samples=64",
        "~callbacks.progress",
        f"hydra.run.dir={tmp_path}",
    ]
    run_script("train.py", *args, env=cli_env(WANDB_SILENT="true"))
    assert (tmp_path / "logs" / "metrics.csv").is_file()
    history = "".join(p.read_text(errors="ignore") for p in (tmp_path / "logs").glob("*.csv"))
    assert "eval/sw2_nfe4" in history and "eval/sw2_nfe8" in history
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert runs and any(runs[0].rglob("*.wandb"))
    media = [p.name for p in runs[0].rglob("*.png")]
    assert any("metric_vs_nfe" in m for m in media) and any("nfe4" in m for m in media)
