"""Undecorated run(): gets the body as a str. The body names what to return."""

import json
import os

import numpy as np
import pandas as pd

state = {}


def init():
    state["model_dir"] = os.environ.get("AZUREML_MODEL_DIR")


def run(raw_data):
    if raw_data == "raise":
        raise ValueError("secret detail from run")
    if raw_data == "numpy":
        return {"array": np.arange(3, dtype=np.int64), "scalar": np.float32(1.5)}
    if raw_data == "pandas":
        frame = pd.DataFrame({"a": [1, 2], "b": [0.5, None]})
        return {"frame": frame, "series": frame["a"]}
    if raw_data == "unserializable":
        return object()
    if raw_data == "json-string":
        # Many Azure scripts return json.dumps(...) themselves.
        return json.dumps({"already": "json"})
    return {"raw": raw_data}
