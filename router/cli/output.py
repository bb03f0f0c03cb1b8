"""How answers are shown: the API's own JSON with --json, else text a person reads."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO


def print_json(data: Any, out: TextIO) -> None:
    out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in (headers, *rows)) for i in range(len(headers))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    )


def pairs(items: Sequence[tuple[str, Any]]) -> str:
    width = max(len(label) for label, _ in items)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in items)


def format_percent(value: Any) -> str:
    if isinstance(value, int | float):
        return f"{value:g}%"
    return "-"


def format_replicas(replicas: Mapping[str, Any]) -> str:
    text = f"{replicas.get('ready', 0)}/{replicas.get('desired', 0)} ready"
    extras = [f"{replicas[kind]} {kind}" for kind in ("starting", "warm") if replicas.get(kind)]
    return text + (f" ({', '.join(extras)})" if extras else "")


def format_service(view: Mapping[str, Any]) -> str:
    """`mlfe service show`: what a person checks after a deploy or a rollout."""
    header = pairs(
        [
            ("service", view.get("name")),
            ("state", view.get("state")),
            ("scoring URI", view.get("scoringUri")),
            ("swagger URI", view.get("swaggerUri")),
            ("auth", view.get("authMode")),
            ("created", view.get("createdTime")),
            ("updated", view.get("updatedTime")),
        ]
    )
    rows = []
    listed: list[str] = []
    errors = []
    for version in view.get("versions", []):
        configured = version.get("trafficPercentile")
        effective = version.get("effectiveTrafficPercentile")
        traffic = format_percent(effective)
        if configured and configured != effective:
            # The default version also gets what the others leave unassigned.
            traffic += f" (set {format_percent(configured)})"
        rows.append(
            [
                str(version.get("name")),
                "yes" if version.get("isDefault") else "",
                "yes" if version.get("isControl") else "",
                traffic,
                str(version.get("state")),
                format_replicas(version.get("replicas") or {}),
            ]
        )
        urls = (version.get("inferenceConfig") or {}).get("replicaUrls")
        if urls:
            # Replicas someone else runs: which ones is what a person checks first.
            listed.append(f"version {version.get('name')} replica urls: {', '.join(urls)}")
        if version.get("error"):
            errors.append(f"version {version.get('name')} error: {version['error']}")
    if view.get("error") and not errors:
        errors.append(f"error: {view['error']}")
    versions = table(["VERSION", "DEFAULT", "CONTROL", "TRAFFIC", "STATE", "REPLICAS"], rows)
    if listed:
        versions += "\n\n" + "\n".join(listed)
    return "\n\n".join([header, versions, *errors])


def format_service_list(views: Sequence[Mapping[str, Any]]) -> str:
    if not views:
        return "no services: deploy one with `mlfe deploy`"
    rows = [
        [
            str(view.get("name")),
            str(view.get("state")),
            str(view.get("authMode")),
            str(len(view.get("versions", []))),
            str(view.get("scoringUri")),
        ]
        for view in views
    ]
    return table(["NAME", "STATE", "AUTH", "VERSIONS", "SCORING URI"], rows)


def format_logs(logs: Mapping[str, Any]) -> str:
    replicas = logs.get("replicas") or []
    if not replicas:
        return f"version {logs.get('version')} has no replicas"
    parts = []
    for replica in replicas:
        parts.append(
            f"==> version {logs.get('version')} replica {replica.get('id')}"
            f" ({replica.get('state')}) <=="
        )
        parts.append(str(replica.get("log") or "").rstrip("\n"))
    return "\n".join(parts)


def format_keys(keys: Mapping[str, Any]) -> str:
    return pairs(
        [("primaryKey", keys.get("primaryKey")), ("secondaryKey", keys.get("secondaryKey"))]
    )


@dataclass
class Output:
    """Where results go: the API's JSON with --json, text a person reads otherwise."""

    as_json: bool
    out: TextIO
    err: TextIO

    def result(self, data: Any, human: Callable[[Any], str]) -> None:
        if self.as_json:
            print_json(data, self.out)
        else:
            self.out.write(human(data) + "\n")
        self.out.flush()
