"""AZUREML_MODEL_DIR, laid out the way Azure ML lays out registered models.

Azure mounts each model at `ROOT/NAME/VERSION/<registered file or folder>`; with one
model AZUREML_MODEL_DIR is `ROOT/NAME/VERSION`, with several it is `ROOT`. Scripts
written for Azure build their paths from that, so `--model` reproduces it with
symlinks in a temporary folder that lives as long as the process.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from scoring_runtime.config import ModelSpec


class ModelLayoutError(Exception):
    """A registered model's files are missing."""


@contextmanager
def model_directory(model_dir: str | None, models: Sequence[ModelSpec]) -> Iterator[str | None]:
    """Yield the value for AZUREML_MODEL_DIR, creating (and later removing) a layout for `models`."""
    if not models:
        yield model_dir
        return
    for model in models:
        if not model.path.exists():
            raise ModelLayoutError(
                f"model {model.name}:{model.version}: {model.path} does not exist"
            )
    root = Path(tempfile.mkdtemp(prefix="mlfe-models-"))
    try:
        for model in models:
            folder = root / model.name / model.version
            folder.mkdir(parents=True)
            os.symlink(model.path, folder / model.path.name)
        if len(models) == 1:
            yield str(root / models[0].name / models[0].version)
        else:
            yield str(root)
    finally:
        # rmtree unlinks the symlinks; the models they point to are left alone.
        shutil.rmtree(root, ignore_errors=True)
