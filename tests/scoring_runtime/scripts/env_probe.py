"""Reports what the runtime set up: model dir and its files, env vars, sys.path."""

import os
import sys

state = {}


def init():
    root = os.environ.get("AZUREML_MODEL_DIR")
    files = []
    if root:
        for folder, _, names in os.walk(root, followlinks=True):
            files += [os.path.relpath(os.path.join(folder, name), root) for name in names]
    state["model_dir"] = root
    state["files"] = sorted(files)


def run(raw_data):
    return {
        **state,
        "entry_script": os.environ.get("AZUREML_ENTRY_SCRIPT"),
        "sys_path_0": sys.path[0],
    }
