"""The shape AutoML writes: Inputs / GlobalParameters, with GlobalParameters optional."""

import pandas as pd
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import (
    StandardPythonParameterType,
)
from inference_schema.schema_decorators import input_schema, output_schema

sample = StandardPythonParameterType(
    {"data": PandasParameterType(pd.DataFrame({"x": [1.0], "y": [2.0]}))}
)
method_sample = StandardPythonParameterType({"method": "predict"})


def init():
    pass


@input_schema("GlobalParameters", method_sample, convert_to_provided_type=False)
@input_schema("Inputs", sample)
@output_schema(StandardPythonParameterType({"Results": [3.0]}))
def run(Inputs, GlobalParameters={"method": "predict"}):  # noqa: B006 - as AutoML writes it
    frame = Inputs["data"]
    assert isinstance(frame, pd.DataFrame)
    total = (frame["x"] + frame["y"]).tolist()
    if GlobalParameters.get("method") == "double":
        total = [value * 2 for value in total]
    return {"Results": total}
