"""run() decorated with a pandas DataFrame input schema (Power BI style)."""

import numpy as np
import pandas as pd
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.schema_decorators import input_schema, output_schema


def init():
    pass


@input_schema("data", PandasParameterType(pd.DataFrame({"age": [30], "bmi": [22.5]})))
@output_schema(NumpyParameterType(np.array([52.5])))
def run(data):
    assert isinstance(data, pd.DataFrame)
    return data["age"] + data["bmi"]
