"""Label and field selectors: the `labelSelector=` / `fieldSelector=` query grammar.

Label selectors follow apimachinery's parser (`a=b`, `a==b`, `a!=b`, `a`, `!a`,
`a in (x,y)`, `a notin (x)`); `!=` and `notin` match objects without the label, as on a
real cluster. Field selectors support `=`, `==`, `!=` on the fields each resource
declares; any other field is a 400, as kube-apiserver answers "field label not supported".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.kube.status import ApiError, bad_request

_SET_OPERATION = re.compile(r"^\s*(\S+)\s+(in|notin)\s*\((.*)\)\s*$")
_COMPARISON = re.compile(r"^\s*([^!=<>\s]+)\s*(==|=|!=|<|>)\s*(\S*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([^!=<>\s()]+)\s*$")


@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # in, notin, exists, !exists, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.operator == "in":
            return present and value in self.values
        if self.operator == "notin":
            return not present or value not in self.values
        if self.operator == "exists":
            return present
        if self.operator == "!exists":
            return not present
        try:
            number = int(value or "")
        except ValueError:
            return False
        limit = int(self.values[0])
        return number > limit if self.operator == "gt" else number < limit

    def render(self) -> str:
        if self.operator == "exists":
            return self.key
        if self.operator == "!exists":
            return f"!{self.key}"
        if self.operator in ("gt", "lt"):
            return f"{self.key}{'>' if self.operator == 'gt' else '<'}{self.values[0]}"
        if len(self.values) == 1:
            return f"{self.key}{'=' if self.operator == 'in' else '!='}{self.values[0]}"
        return f"{self.key} {self.operator} ({','.join(sorted(self.values))})"


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(requirement.matches(labels) for requirement in self.requirements)

    def render(self) -> str:
        """The string form Scale.status.selector carries (sorted by key, as apimachinery)."""
        ordered = sorted(self.requirements, key=lambda r: r.key)
        return ",".join(requirement.render() for requirement in ordered)

    @property
    def empty(self) -> bool:
        return not self.requirements


EVERYTHING = LabelSelector()


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside a `(...)` value set."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [part for part in parts if part.strip()]


def parse_label_selector(text: str | None) -> LabelSelector:
    if not text or not text.strip():
        return EVERYTHING
    requirements = []
    for part in _split_top_level(text):
        requirements.append(_parse_requirement(part))
    return LabelSelector(tuple(requirements))


def _parse_requirement(part: str) -> Requirement:
    set_operation = _SET_OPERATION.match(part)
    if set_operation:
        key, operator, values = set_operation.groups()
        listed = tuple(value.strip() for value in values.split(",") if value.strip())
        return Requirement(key, operator, listed)
    comparison = _COMPARISON.match(part)
    if comparison:
        key, operator, value = comparison.groups()
        if operator in ("<", ">"):
            if not re.fullmatch(r"-?\d+", value):
                raise bad_request(
                    f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {part.strip()}"
                )
            return Requirement(key, "gt" if operator == ">" else "lt", (value,))
        return Requirement(key, "notin" if operator == "!=" else "in", (value,))
    exists = _EXISTS.match(part)
    if exists:
        negated, key = exists.groups()
        return Requirement(key, "!exists" if negated else "exists")
    raise bad_request(f"unable to parse requirement: found '{part.strip()}', expected: identifier")


def from_label_selector_object(selector: Mapping[str, Any] | None) -> LabelSelector:
    """Convert a metav1.LabelSelector (matchLabels + matchExpressions)."""
    if not selector:
        return EVERYTHING
    requirements = [
        Requirement(key, "in", (str(value),))
        for key, value in (selector.get("matchLabels") or {}).items()
    ]
    operators = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expression in selector.get("matchExpressions") or []:
        operator = operators.get(expression.get("operator", ""))
        if operator is None:
            raise bad_request(
                f"{expression.get('operator')!r} is not a valid label selector operator"
            )
        requirements.append(
            Requirement(expression["key"], operator, tuple(expression.get("values") or ()))
        )
    return LabelSelector(tuple(requirements))


FieldGetter = Callable[[Mapping[str, Any]], str | None]


@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, bool, str], ...] = ()  # (field, equal, value)

    def matches(self, obj: Mapping[str, Any], getters: Mapping[str, FieldGetter]) -> bool:
        for name, equal, value in self.terms:
            actual = getters[name](obj) or ""
            if (actual == value) != equal:
                return False
        return True

    def exact_name(self) -> str | None:
        """The name a `metadata.name=x` selector pins, so a watch can be on one object."""
        for name, equal, value in self.terms:
            if name == "metadata.name" and equal:
                return value
        return None


def parse_field_selector(text: str | None, supported: Mapping[str, FieldGetter]) -> FieldSelector:
    if not text or not text.strip():
        return FieldSelector()
    terms = []
    for part in text.split(","):
        if not part.strip():
            continue
        match = re.fullmatch(r"\s*([^!=\s]+)\s*(==|=|!=)\s*(.*?)\s*", part)
        if not match:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        name, operator, value = match.groups()
        if name not in supported:
            raise ApiError(400, "BadRequest", f"field label not supported: {name}")
        terms.append((name, operator != "!=", value))
    return FieldSelector(tuple(terms))


def _path(*keys: str) -> FieldGetter:
    def get(obj: Mapping[str, Any]) -> str | None:
        current: Any = obj
        for key in keys:
            if not isinstance(current, Mapping):
                return None
            current = current.get(key)
        return None if current is None else str(current)

    return get


COMMON_FIELDS: dict[str, FieldGetter] = {
    "metadata.name": _path("metadata", "name"),
    "metadata.namespace": _path("metadata", "namespace"),
}

POD_FIELDS: dict[str, FieldGetter] = {
    **COMMON_FIELDS,
    "spec.nodeName": _path("spec", "nodeName"),
    "spec.restartPolicy": _path("spec", "restartPolicy"),
    "spec.schedulerName": _path("spec", "schedulerName"),
    "spec.serviceAccountName": _path("spec", "serviceAccountName"),
    "status.phase": _path("status", "phase"),
    "status.podIP": _path("status", "podIP"),
    "status.nominatedNodeName": _path("status", "nominatedNodeName"),
}

EVENT_FIELDS: dict[str, FieldGetter] = {
    **COMMON_FIELDS,
    "involvedObject.kind": _path("involvedObject", "kind"),
    "involvedObject.namespace": _path("involvedObject", "namespace"),
    "involvedObject.name": _path("involvedObject", "name"),
    "involvedObject.uid": _path("involvedObject", "uid"),
    "involvedObject.apiVersion": _path("involvedObject", "apiVersion"),
    "involvedObject.resourceVersion": _path("involvedObject", "resourceVersion"),
    "involvedObject.fieldPath": _path("involvedObject", "fieldPath"),
    "reason": _path("reason"),
    "reportingComponent": _path("reportingComponent"),
    "source": _path("source", "component"),
    "type": _path("type"),
}

SECRET_FIELDS: dict[str, FieldGetter] = {**COMMON_FIELDS, "type": _path("type")}

NAMESPACE_FIELDS: dict[str, FieldGetter] = {
    **COMMON_FIELDS,
    "status.phase": _path("status", "phase"),
}
