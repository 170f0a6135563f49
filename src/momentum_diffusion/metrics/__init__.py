"""Sample-quality metrics. ``HEADLINE_METRICS``: the row keys that reports, plots and dashboards show first (FID,
digits FD, sliced W2 and mode metrics of vector data, the graph MMD² and their average, NLL)."""

HEADLINE_METRICS = ("fid", "fd_digits", "sw2", "mode_kl", "mode_tv", "degree", "cluster", "orbit", "avg", "nll_bpd")
