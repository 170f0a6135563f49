"""Report generators (argparse programs, not Hydra apps): they run grids of the Hydra configs and write tables."""
