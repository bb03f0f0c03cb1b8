"""Train the example model: ridge regression on scikit-learn's bundled diabetes data.

    python examples/diabetes/train.py [--out DIR]

Writes DIR/diabetes.pkl (default: model/ next to this file), which is what score.py
loads from AZUREML_MODEL_DIR. The data ships with scikit-learn, so nothing is downloaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import joblib
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

MODEL_FILE = "diabetes.pkl"
DEFAULT_OUT = Path(__file__).resolve().parent / "model"
HELD_OUT_ROWS = 42


def train(out_dir: Path) -> Path:
    """Fit the model on all but the last rows, report R² on those, save it; return the path."""
    features, target = load_diabetes(return_X_y=True)
    model = Ridge(alpha=0.1)
    model.fit(features[:-HELD_OUT_ROWS], target[:-HELD_OUT_ROWS])
    r2 = model.score(features[-HELD_OUT_ROWS:], target[-HELD_OUT_ROWS:])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / MODEL_FILE
    joblib.dump(model, path)
    print(f"event=trained model={path} held_out_rows={HELD_OUT_ROWS} r2={r2:.3f}", flush=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder to write {MODEL_FILE} into (default: {DEFAULT_OUT})",
    )
    train(parser.parse_args().out)


if __name__ == "__main__":
    main()
