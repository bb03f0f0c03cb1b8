"""The three PATCH content types, as kube-apiserver applies them to built-in kinds."""

from __future__ import annotations

import pytest

from tests.kube.patch import PatchError, json_patch, merge_patch, strategic_merge_patch

POD_SPEC = {
    "containers": [
        {
            "name": "replica",
            "image": "a:1",
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        },
        {"name": "sidecar", "image": "s:1"},
    ],
    "volumes": [{"name": "src", "configMap": {"name": "cm"}}],
}


def test_merge_patch_replaces_lists_and_null_deletes() -> None:
    patched = merge_patch(
        {"a": {"b": 1, "c": 2}, "l": [1, 2]}, {"a": {"b": None, "d": 3}, "l": [3]}
    )
    assert patched == {"a": {"c": 2, "d": 3}, "l": [3]}


def test_strategic_merge_merges_containers_and_env_by_name() -> None:
    patch = {
        "containers": [
            {
                "name": "replica",
                "image": "a:2",
                "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
            }
        ]
    }
    patched = strategic_merge_patch(POD_SPEC, patch)
    replica, sidecar = patched["containers"]
    assert replica["image"] == "a:2" and sidecar == {"name": "sidecar", "image": "s:1"}
    assert replica["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "3"},
        {"name": "C", "value": "4"},
    ]
    assert patched["volumes"] == POD_SPEC["volumes"]


def test_strategic_merge_directives() -> None:
    deleted = strategic_merge_patch(
        POD_SPEC, {"containers": [{"name": "sidecar", "$patch": "delete"}]}
    )
    assert [c["name"] for c in deleted["containers"]] == ["replica"]
    replaced = strategic_merge_patch(
        POD_SPEC, {"containers": [{"name": "only", "image": "o:1"}, {"$patch": "replace"}]}
    )
    assert replaced["containers"] == [{"name": "only", "image": "o:1"}]
    ordered = strategic_merge_patch(
        {"metadata": {"finalizers": ["a"]}},
        {"metadata": {"finalizers": ["b"]}, "$setElementOrder/x": []},
    )
    assert ordered == {"metadata": {"finalizers": ["a", "b"]}}


def test_json_patch_operations() -> None:
    document = {"spec": {"replicas": 1, "list": ["a"]}}
    patched = json_patch(
        document,
        [
            {"op": "test", "path": "/spec/replicas", "value": 1},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/spec/list/-", "value": "b"},
            {"op": "copy", "from": "/spec/replicas", "path": "/spec/copied"},
            {"op": "move", "from": "/spec/copied", "path": "/moved"},
            {"op": "remove", "path": "/spec/list/0"},
        ],
    )
    assert patched == {"spec": {"replicas": 3, "list": ["b"]}, "moved": 3}
    assert document == {"spec": {"replicas": 1, "list": ["a"]}}
    with pytest.raises(PatchError):
        json_patch(document, [{"op": "test", "path": "/spec/replicas", "value": 2}])
    with pytest.raises(PatchError):
        json_patch(document, [{"op": "remove", "path": "/spec/missing"}])
