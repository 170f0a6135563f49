"""The standard W&B dashboard for momentum_diffusion runs, as code (wandb-workspaces; the `[wandb]` extra).

Sections: training (loss, throughput, bad steps, learning rate); one section per sample-quality metric with a
panel per NFE budget (`eval/<metric>_nfe<N>`, what SampleEvaluation logs) grouped by `sampler`; and the media
(per-budget sample grids `samples/nfe<N>`, the metric-vs-NFE plot `eval/metric_vs_nfe`).

    python scripts/wandb_dashboard.py --entity ME --project momentum_diffusion --metrics fid --nfe 50 100 250 500
    python scripts/wandb_dashboard.py … --dry-run      # print the workspace spec (JSON) instead of saving it

Saving needs a W&B login and network; --dry-run needs neither.
"""

from __future__ import annotations

import argparse
import sys

from momentum_diffusion.metrics import HEADLINE_METRICS


def build_workspace(entity: str, project: str, metrics, nfes, name: str = "momentum_diffusion"):
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    training = ws.Section(
        name="Training",
        is_open=True,
        panels=[
            wr.LinePlot(title="loss", y=["train/loss"], smoothing_factor=0.9),
            wr.LinePlot(title="images per second", y=["train/img_per_s"]),
            wr.LinePlot(title="skipped (bad) steps", y=["train/bad_steps"]),
            wr.LinePlot(title="learning rate", y=["lr-Adam"]),
        ],
    )
    quality = [
        ws.Section(
            name=f"Sample quality: {metric}",
            is_open=True,
            panels=[
                wr.LinePlot(title=f"{metric} at NFE {n}", y=[f"eval/{metric}_nfe{n}"], groupby="sampler") for n in nfes
            ],
        )
        for metric in metrics
    ]
    media = ws.Section(
        name="Samples",
        is_open=True,
        panels=[
            wr.MediaBrowser(title="metric vs NFE", media_keys=["eval/metric_vs_nfe"]),
            wr.MediaBrowser(title="samples per budget", media_keys=[f"samples/nfe{n}" for n in nfes], mode="grid"),
        ],
    )
    return ws.Workspace(entity=entity, project=project, name=name, sections=[training, *quality, media])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entity", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--name", default="momentum_diffusion")
    parser.add_argument("--metrics", nargs="+", default=[m for m in HEADLINE_METRICS if m != "nll_bpd"])
    parser.add_argument("--nfe", nargs="+", type=int, default=[20, 50, 100])
    parser.add_argument("--dry-run", action="store_true", help="print the spec, save nothing")
    args = parser.parse_args(argv)
    try:
        workspace = build_workspace(args.entity, args.project, args.metrics, args.nfe, args.name)
    except ImportError:
        print("error: needs wandb-workspaces: pip install 'momentum_diffusion[wandb]'", file=sys.stderr)
        return 2
    if args.dry_run:
        print(workspace._to_model().model_dump_json(indent=1))
        return 0
    saved = workspace.save()
    print(f"saved workspace: {saved.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
