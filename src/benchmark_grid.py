"""python src/benchmark_grid.py [--specs …] [--nfe …] [--n-samples N]: the standard exact-score grid."""

from momentum_diffusion.reports.benchmark_grid import main

if __name__ == "__main__":
    main()
