"""Label and field selectors, and quantities in canonical form."""

from __future__ import annotations

import pytest

from tests.kube import quantity
from tests.kube.selectors import (
    POD_FIELDS,
    from_label_selector_object,
    parse_field_selector,
    parse_label_selector,
)
from tests.kube.status import ApiError


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web,tier", {"app": "web"}, False),
        ("app!=web", {}, True),
        ("!canary", {"canary": "1"}, False),
        ("env in (prod, staging),app", {"env": "staging", "app": "x"}, True),
        ("env notin (prod)", {}, True),
        ("", {"anything": "goes"}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert parse_label_selector(selector).matches(labels) is matches


def test_label_selector_objects_render_sorted_for_scale_status() -> None:
    selector = from_label_selector_object(
        {
            "matchLabels": {"mlfe.io/version": "v1", "app": "x"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}],
        }
    )
    assert selector.render() == "app=x,mlfe.io/version=v1,tier in (a,b)"


def test_field_selectors_accept_only_supported_fields() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "n"}, "status": {"phase": "Running"}}
    assert parse_field_selector("metadata.name=p,status.phase!=Pending", POD_FIELDS).matches(
        pod, POD_FIELDS
    )
    with pytest.raises(ApiError) as unsupported:
        parse_field_selector("spec.image=x", POD_FIELDS)
    assert unsupported.value.code == 400


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("0.1", "100m"),
        ("1000m", "1"),
        ("1.5", "1500m"),
        ("0.5Gi", "512Mi"),
        ("1024Mi", "1Gi"),
        ("1.5Gi", "1536Mi"),
        ("1000M", "1G"),
        (2, "2"),
    ],
)
def test_quantities_read_back_in_canonical_form(given: str | int, canonical: str) -> None:
    assert quantity.canonical(given) == canonical
