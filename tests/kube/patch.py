"""The three PATCH content types kube-apiserver applies to built-in kinds.

- `application/merge-patch+json`: RFC 7386 (null deletes a key, lists are replaced).
- `application/strategic-merge-patch+json`: a merge patch whose lists of objects merge
  element by element on their patchMergeKey (containers by `name`, volumeMounts by
  `mountPath`, ...), honouring `$patch: delete|replace` and dropping the other `$`
  directives; the default the Python client picks for a dict body.
- `application/json-patch+json`: RFC 6902 operations.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
SUPPORTED = (MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH)


class PatchError(ValueError):
    """The patch cannot be applied to the object (answered with 422)."""


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# patchMergeKey of the list fields mlfe's kinds carry (from the k8s.io/api struct tags).
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
# Lists of scalars whose patchStrategy is merge: elements are added, not replaced.
_MERGED_SCALAR_LISTS = {"finalizers"}


def _merge_key(field: str, items: Sequence[Any]) -> str | None:
    if field == "ports":
        # Container ports merge on containerPort, Service ports on port.
        sample = next((item for item in items if isinstance(item, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return _MERGE_KEYS.get(field)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    return _strategic(target, patch)


def _strategic(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # $retainKeys, $setElementOrder/...: ordering hints we do not need
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_list(key, result[key], value)
        elif isinstance(value, dict):
            merged = _strategic(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        else:
            result[key] = copy.deepcopy(value)
    return result


def _merge_list(field: str, current: list[Any], patch: list[Any]) -> list[Any]:
    if field in _MERGED_SCALAR_LISTS:
        merged = list(current)
        merged.extend(item for item in patch if item not in merged)
        return merged
    key = _merge_key(field, patch or current)
    if key is None or not all(isinstance(item, dict) for item in patch):
        return copy.deepcopy(patch)
    if any(item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(item) for item in patch if item.get("$patch") != "replace"]
    merged = [copy.deepcopy(item) for item in current]
    for item in patch:
        position = next(
            (
                index
                for index, existing in enumerate(merged)
                if isinstance(existing, dict) and existing.get(key) == item.get(key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if position is not None:
                merged.pop(position)
        elif position is None:
            merged.append(_strategic({}, item))
        else:
            merged[position] = _strategic(merged[position], item)
    return merged


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    document = copy.deepcopy(target)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError(f"invalid JSON patch operation: {operation!r}")
        document = _apply_operation(document, operation)
    return document


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer must start with '/': {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _resolve(document: Any, parts: list[str]) -> Any:
    current = document
    for part in parts:
        if isinstance(current, dict):
            if part not in current:
                raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
            current = current[part]
        elif isinstance(current, list):
            index = _index(part, len(current), allow_end=False)
            current = current[index]
        else:
            raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
    return current


def _index(part: str, length: int, *, allow_end: bool) -> int:
    if part == "-" and allow_end:
        return length
    if not part.isdigit():
        raise PatchError(f"invalid array index: {part!r}")
    index = int(part)
    if index > length or (index == length and not allow_end):
        raise PatchError(f"array index out of range: {index}")
    return index


def _add(document: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return copy.deepcopy(value)
    parent = _resolve(document, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), allow_end=True), copy.deepcopy(value))
    else:
        raise PatchError(f"cannot add to a scalar at /{'/'.join(parts)}")
    return document


def _remove(document: Any, parts: list[str]) -> tuple[Any, Any]:
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _resolve(document, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"unable to remove nonexistent key: {last}: missing value")
        return document, parent.pop(last)
    if isinstance(parent, list):
        return document, parent.pop(_index(last, len(parent), allow_end=False))
    raise PatchError(f"cannot remove from a scalar at /{'/'.join(parts)}")


def _apply_operation(document: Any, operation: dict[str, Any]) -> Any:
    op = operation["op"]
    parts = _pointer(operation["path"])
    if op == "add":
        return _add(document, parts, operation.get("value"))
    if op == "remove":
        return _remove(document, parts)[0]
    if op == "replace":
        if not parts:
            return copy.deepcopy(operation.get("value"))
        _resolve(document, parts)  # must exist
        document, _ = _remove(document, parts)
        return _add(document, parts, operation.get("value"))
    if op in ("move", "copy"):
        source = _pointer(operation.get("from", ""))
        value = copy.deepcopy(_resolve(document, source))
        if op == "move":
            document, _ = _remove(document, source)
        return _add(document, parts, value)
    if op == "test":
        if _resolve(document, parts) != operation.get("value"):
            raise PatchError(f"testing value /{'/'.join(parts)} failed: test failed")
        return document
    raise PatchError(f"Unexpected kind: {op}")
