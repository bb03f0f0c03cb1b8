"""run() results to JSON bytes: orjson, with numpy handled natively and pandas by hand.

Azure's server uses `json.dumps`, which fails on numpy and pandas values; scripts that
return them get a real answer here instead of a 500.
"""

from __future__ import annotations

import datetime
import decimal
import sys
from typing import Any

import orjson

# Non-string dict keys: json.dumps turns int keys into strings, so scripts rely on it.
_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def to_json(value: Any) -> bytes:
    """Serialise `value`; raises TypeError naming the type when it cannot be."""
    return orjson.dumps(value, default=_default, option=_OPTIONS)


def _default(value: Any) -> Any:
    # Looked up per call so the runtime never imports pandas itself.
    pandas = sys.modules.get("pandas")
    if pandas is not None:
        if isinstance(value, pandas.DataFrame):
            return value.to_dict(orient="records")
        if isinstance(value, pandas.Series | pandas.Index):
            return value.tolist()
        if value is pandas.NaT or value is pandas.NA:
            return None
        if isinstance(value, pandas.Timestamp | pandas.Timedelta | pandas.Period):
            return str(value)
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        # numpy arrays orjson declines (object dtype, non-contiguous) and numpy scalars.
        return tolist()
    raise TypeError(f"{type(value).__module__}.{type(value).__qualname__} is not JSON serializable")


def error_json(message: str) -> bytes:
    """The body of every error the runtime makes itself: {"message": ...}."""
    return orjson.dumps({"message": message})
