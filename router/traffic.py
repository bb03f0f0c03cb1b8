"""Which version of a service a request goes to, from the versions' `trafficPercentile`s.

Pure: the caller supplies the random number, so tests choose it and the data plane uses a
fast generator. Pinning a version by header is the data plane's job; it only asks `in`.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

# Percentiles are user floats: 33.3 + 33.3 + 33.4 must not count as over 100.
_TOLERANCE: Final = 1e-9


@dataclass(frozen=True)
class TrafficSplit:
    """The effective share of each version, in percent, summing to 100."""

    default: str
    weights: tuple[tuple[str, float], ...]
    # Versions with a share, and the upper bound of each one's range of r but the last's.
    _choices: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _bounds: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _versions: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        versions = [version for version, _ in self.weights]
        if self.default not in versions:
            raise ValueError(f"default version '{self.default}' is not one of the versions")
        if len(set(versions)) != len(versions):
            raise ValueError("a version is listed twice in the traffic split")
        if any(not 0 <= weight <= 100 for _, weight in self.weights):
            raise ValueError("every effective weight must be between 0 and 100")
        total = math.fsum(weight for _, weight in self.weights)
        if abs(total - 100) > _TOLERANCE * 100 or total <= 0:
            raise ValueError(f"effective weights must sum to 100, got {total}")
        choices: list[str] = []
        bounds: list[float] = []
        cumulative = 0.0
        for version, weight in self.weights:
            if weight > 0:
                cumulative += weight
                choices.append(version)
                bounds.append(cumulative / total)
        object.__setattr__(self, "_choices", tuple(choices))
        # The last bound is dropped: whatever rounding leaves above it belongs to the last.
        object.__setattr__(self, "_bounds", tuple(bounds[:-1]))
        object.__setattr__(self, "_versions", frozenset(versions))

    @classmethod
    def from_percentiles(cls, percentiles: Mapping[str, float], default: str) -> TrafficSplit:
        """Give the default version its own percentile plus whatever the others leave over."""
        if default not in percentiles:
            raise ValueError(f"default version '{default}' is not one of the versions")
        for version, percentile in percentiles.items():
            if not 0 <= percentile <= 100:  # also refuses NaN
                raise ValueError(
                    f"trafficPercentile of version '{version}' must be between 0 and 100,"
                    f" got {percentile}"
                )
        assigned = math.fsum(percentiles.values())
        if assigned > 100 + _TOLERANCE * 100:
            raise ValueError(f"trafficPercentile values add up to {assigned:g}, more than 100")
        remainder = max(0.0, 100 - assigned)
        weights = tuple(
            (version, float(percentile) + (remainder if version == default else 0.0))
            for version, percentile in percentiles.items()
        )
        return cls(default=default, weights=weights)

    def choose_version(self, r: float) -> str:
        """The version for a uniform random `r` in [0, 1); versions at 0% are never chosen."""
        return self._choices[bisect_right(self._bounds, r)]

    def __contains__(self, version: object) -> bool:
        return version in self._versions
