"""Standard-typed parameters: several keyword arguments, a default, request_headers."""

from inference_schema.parameter_types.standard_py_parameter_type import (
    StandardPythonParameterType,
)
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    pass


@input_schema("name", StandardPythonParameterType("world"))
@input_schema("count", StandardPythonParameterType(2))
@output_schema(StandardPythonParameterType({"greeting": "hello world"}))
def run(name, count=2, request_headers=None):
    return {
        "greeting": " ".join(["hello", name] * count),
        "custom_header": request_headers.get("x-custom") if request_headers else None,
        "header_keys": sorted(request_headers) if request_headers else [],
    }
