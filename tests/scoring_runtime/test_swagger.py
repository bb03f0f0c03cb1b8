"""The swagger/OpenAPI documents clients (Power BI, generated SDKs) read from a replica."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import (
    StandardPythonParameterType,
)
from inference_schema.schema_decorators import input_schema, output_schema
from openapi_spec_validator import validate

from scoring_runtime.swagger import SUPPORTED_VERSIONS, build_document

# inference_schema registers schemas by module and function name, so every entry point
# below has its own name.


def undecorated_run(raw_body: str) -> str:
    return raw_body


@input_schema("count", StandardPythonParameterType(3))
@input_schema("ratio", StandardPythonParameterType(0.5))
@input_schema("label", StandardPythonParameterType("cat"))
@output_schema(StandardPythonParameterType({"score": 1.5}))
def standard_run(count: int, ratio: float, label: str) -> dict[str, float]:
    return {"score": count * ratio}


@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])))
@output_schema(NumpyParameterType(np.array([0.25, 0.75])))
def numpy_run(data: Any) -> Any:
    return data.sum(axis=1)


SAMPLE_FRAME = pd.DataFrame({"age": [0.038, -0.002], "sex": [0.051, -0.045], "visits": [3, 1]})


@input_schema("data", PandasParameterType(SAMPLE_FRAME))
@output_schema(StandardPythonParameterType([151.0, 75.0]))
def pandas_run(data: Any) -> list[float]:
    return [0.0] * len(data)


@input_schema(
    "Inputs",
    StandardPythonParameterType(
        {"data": PandasParameterType(pd.DataFrame({"city": ["Paris"], "rooms": [2]}))}
    ),
)
@input_schema("GlobalParameters", StandardPythonParameterType({"method": "predict"}))
@output_schema(StandardPythonParameterType({"Results": [2.5]}))
def automl_run(Inputs: Any, GlobalParameters: Any = None) -> dict[str, list[float]]:
    return {"Results": [0.0]}


@input_schema("data", StandardPythonParameterType([1, "two"]))
def mixed_array_run(data: list[Any]) -> list[Any]:
    return data


ALL_RUNS = [undecorated_run, standard_run, numpy_run, pandas_run, automl_run]


def schemas(document: dict[str, Any]) -> dict[str, Any]:
    if "definitions" in document:
        return document["definitions"]
    return document["components"]["schemas"]


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
@pytest.mark.parametrize("run", ALL_RUNS, ids=lambda run: run.__name__)
def test_every_document_is_valid(run: Callable[..., Any], version: str) -> None:
    validate(build_document(run, version))


@pytest.mark.parametrize(
    ("version", "key", "value"),
    [("2", "swagger", "2.0"), ("3", "openapi", "3.0.3"), ("3.1", "openapi", "3.1.0")],
)
def test_document_declares_the_requested_version(version: str, key: str, value: str) -> None:
    assert build_document(numpy_run, version)[key] == value


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_paths_match_azures_documents(version: str) -> None:
    document = build_document(numpy_run, version)
    assert set(document["paths"]) == {"/", "/score", "/swagger.json"}
    assert document["paths"]["/"]["get"]["operationId"] == "ServiceHealthCheck"
    score = document["paths"]["/score"]["post"]
    assert score["operationId"] == "RunMLService"
    assert score["security"] == [{"Bearer": []}]
    ref_root = "#/definitions/" if version == "2" else "#/components/schemas/"
    if version == "2":
        (body,) = score["parameters"]
        assert body["in"] == "body"
        input_ref = body["schema"]["$ref"]
        output_ref = score["responses"]["200"]["schema"]["$ref"]
        error_ref = score["responses"]["default"]["schema"]["$ref"]
    else:
        input_ref = score["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        output_ref = score["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        error_ref = score["responses"]["default"]["content"]["application/json"]["schema"]["$ref"]
    assert input_ref == ref_root + "ServiceInput"
    assert output_ref == ref_root + "ServiceOutput"
    assert error_ref == ref_root + "ErrorResponse"
    assert schemas(document)["ErrorResponse"] == {
        "type": "object",
        "properties": {"message": {"type": "string"}},
    }


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_undecorated_run_takes_and_returns_any_object(version: str) -> None:
    found = schemas(build_document(undecorated_run, version))
    assert found["ServiceInput"] == {"type": "object", "example": {}}
    assert found["ServiceOutput"] == {"type": "object", "example": {}}


def test_standard_parameters_are_typed_with_examples() -> None:
    found = schemas(build_document(standard_run, "3"))
    service_input = found["ServiceInput"]
    assert service_input["properties"] == {
        "count": {"type": "integer", "format": "int64"},
        "ratio": {"type": "number", "format": "double"},
        "label": {"type": "string"},
    }
    assert service_input["example"] == {"count": 3, "ratio": 0.5, "label": "cat"}
    assert found["ServiceOutput"]["example"] == {"score": 1.5}


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_numpy_schema_keeps_format_and_example(version: str) -> None:
    found = schemas(build_document(numpy_run, version))
    data = found["ServiceInput"]["properties"]["data"]
    assert data["format"] == "numpy.ndarray"
    assert data["items"] == {"type": "array", "items": {"type": "number", "format": "double"}}
    assert found["ServiceInput"]["example"] == {"data": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}
    assert found["ServiceOutput"]["format"] == "numpy.ndarray"
    assert found["ServiceOutput"]["example"] == [0.25, 0.75]


def test_pandas_schema_names_the_columns_for_power_bi() -> None:
    found = schemas(build_document(pandas_run, "2"))
    data = found["ServiceInput"]["properties"]["data"]
    assert data["format"] == "pandas.DataFrame:records"
    assert data["items"]["properties"] == {
        "age": {"type": "number", "format": "double"},
        "sex": {"type": "number", "format": "double"},
        "visits": {"type": "integer", "format": "int64"},
    }
    assert found["ServiceInput"]["example"] == {
        "data": [
            {"age": 0.038, "sex": 0.051, "visits": 3},
            {"age": -0.002, "sex": -0.045, "visits": 1},
        ]
    }
    assert found["ServiceOutput"]["example"] == [151.0, 75.0]


def test_automl_inputs_and_global_parameters_are_nested_objects() -> None:
    found = schemas(build_document(automl_run, "3.1"))
    service_input = found["ServiceInput"]
    assert set(service_input["properties"]) == {"Inputs", "GlobalParameters"}
    data = service_input["properties"]["Inputs"]["properties"]["data"]
    assert data["format"] == "pandas.DataFrame:records"
    assert service_input["example"] == {
        "Inputs": {"data": [{"city": "Paris", "rooms": 2}]},
        "GlobalParameters": {"method": "predict"},
    }
    assert found["ServiceOutput"]["example"] == {"Results": [2.5]}


def test_service_name_and_version_fill_info() -> None:
    info = build_document(numpy_run, "3", service_name="diabetes", service_version="7")["info"]
    assert info["title"] == "diabetes"
    assert info["version"] == "7"
    assert build_document(numpy_run, "2")["info"]["title"] == "ML service"


@pytest.mark.parametrize("version", ["4", "2.0", "3.0", "", "v3"])
def test_unknown_version_is_refused_naming_the_supported_ones(version: str) -> None:
    with pytest.raises(ValueError, match=r"supported versions: 2, 3, 3\.1"):
        build_document(numpy_run, version)


def test_mixed_type_array_cannot_be_swagger_2() -> None:
    # Swagger 2.0 has no mixed-type arrays, so Azure serves only 3.x for such a script.
    with pytest.raises(ValueError, match=r"supported versions: 3, 3\.1"):
        build_document(mixed_array_run, "2")
    validate(build_document(mixed_array_run, "3"))


def test_each_call_returns_an_independent_document() -> None:
    first = build_document(numpy_run, "3")
    schemas(first)["ServiceInput"]["example"]["data"].clear()
    first["info"]["title"] = "changed"
    second = build_document(numpy_run, "3")
    assert schemas(second)["ServiceInput"]["example"]["data"] == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert second["info"]["title"] == "ML service"
