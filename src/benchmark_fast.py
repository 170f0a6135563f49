"""python src/benchmark_fast.py [--specs …] [--processes …] [--n-samples N]: first NFE reaching EM@1000's mode-KL."""

from momentum_diffusion.reports.fast_sampling import main

if __name__ == "__main__":
    main()
