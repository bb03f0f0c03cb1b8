"""resource.Quantity parsing and canonical form.

kube-apiserver stores quantities in canonical form: `cpu: 0.1` reads back as `100m`
and `memory: 0.5Gi` as `512Mi`. A controller that compares what it sent with what it
reads must cope with that, so this double does it too.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_SUFFIX = {exponent: suffix for suffix, exponent in _DECIMAL.items() if exponent >= -3}
_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE]([+-]?\d+))?$"
)


class QuantityError(ValueError):
    pass


def parse(text: str | int | float) -> tuple[Fraction, str]:
    """The exact value and its format family: "binary" or "decimal"."""
    match = _QUANTITY.match(str(text).strip())
    if not match:
        raise QuantityError(
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        )
    number, suffix, exponent = match.groups()
    value = Fraction(number)
    if suffix in _BINARY:
        return value * 2 ** _BINARY[suffix], "binary"
    if exponent is not None:
        return value * Fraction(10) ** int(exponent), "decimal"
    return value * Fraction(10) ** _DECIMAL[suffix or ""], "decimal"


def canonical(text: str | int | float) -> str:
    value, family = parse(text)
    return _format(value, family)


def _format(value: Fraction, family: str) -> str:
    sign = "-" if value < 0 else ""
    value = abs(value)
    # Precision below a milli-unit is rounded up, as Quantity.RoundUp(-3) does.
    milli = math.ceil(value * 1000)
    if family == "binary" and value.denominator == 1 and value >= 1024:
        integer = int(value)
        shift = 0
        while shift < 60 and integer % 1024 == 0:
            integer //= 1024
            shift += 10
        suffix = next(s for s, bits in _BINARY.items() if bits == shift) if shift else ""
        return f"{sign}{integer}{suffix}"
    if milli == 0:
        return "0"
    exponent = -3
    mantissa = milli
    while exponent < 18 and mantissa % 1000 == 0:
        mantissa //= 1000
        exponent += 3
    return f"{sign}{mantissa}{_DECIMAL_SUFFIX[exponent]}"
