"""run() results to JSON (scoring_runtime/encoding.py); pure."""

from __future__ import annotations

import datetime
import decimal

import numpy as np
import orjson
import pandas as pd
import pytest

from scoring_runtime.encoding import error_json, to_json


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"a": [1, 2.5, None, "x"]}, {"a": [1, 2.5, None, "x"]}),
        ({1: "int keys"}, {"1": "int keys"}),
        (np.array([[1, 2], [3, 4]], dtype=np.int32), [[1, 2], [3, 4]]),
        (np.float64(0.25), 0.25),
        (np.array(["a", None], dtype=object), ["a", None]),
        (np.arange(6).reshape(2, 3)[:, 1], [1, 4]),  # not contiguous
        (pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]),
        (pd.Series([1.5, 2.5]), [1.5, 2.5]),
        (pd.Index([3, 4]), [3, 4]),
        ({"when": pd.NaT, "missing": pd.NA}, {"when": None, "missing": None}),
        ({1, 2} & {2}, [2]),
        (decimal.Decimal("1.25"), 1.25),
        (datetime.timedelta(seconds=90), 90.0),
        (float("nan"), None),
    ],
)
def test_values_run_returns_become_json(value, expected) -> None:
    assert orjson.loads(to_json(value)) == expected


def test_unserializable_value_names_its_type() -> None:
    class Model:
        pass

    with pytest.raises(TypeError, match="Model"):
        to_json({"model": Model()})


def test_error_body_is_a_message_object() -> None:
    assert orjson.loads(error_json('bad "input"')) == {"message": 'bad "input"'}
