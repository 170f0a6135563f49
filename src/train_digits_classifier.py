"""Train (or load) the 8x8 digits classifier that defines the digits FD, and print its val accuracy.

Usage: python src/train_digits_classifier.py [--retrain] [--cache-dir DIR] [--epochs N] [--seed S]
"""

import argparse

from momentum_diffusion.metrics.digits_classifier import (
    classifier_path,
    load_digits_classifier,
    save_digits_classifier,
    train_digits_classifier,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retrain", action="store_true", help="train even if cached weights exist")
    parser.add_argument("--cache-dir", default=None, help="default: $MOMENTUM_DIFFUSION_CACHE or ~/.cache/...")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = classifier_path(args.cache_dir)
    if args.retrain or not path.is_file():
        model = train_digits_classifier(epochs=args.epochs, seed=args.seed, verbose=True)
        save_digits_classifier(model, path)
        print(f"trained in {model.train_seconds:.1f} s")
    else:
        model = load_digits_classifier(args.cache_dir)
    print(f"val accuracy {model.val_accuracy:.4f}; weights at {path}")


if __name__ == "__main__":
    main()
