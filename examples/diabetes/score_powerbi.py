# The same model for Power BI: Power BI builds its input form from the swagger document,
# so the input is a pandas data frame whose columns are named after the features.
import os

import joblib
import pandas as pd
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import (
    StandardPythonParameterType,
)
from inference_schema.schema_decorators import input_schema, output_schema

FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]

input_sample = pd.DataFrame(
    [
        [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018],
        [-0.002, -0.045, -0.051, -0.026, -0.008, -0.019, 0.074, -0.039, -0.068, -0.092],
    ],
    columns=FEATURES,
)
output_sample = [199.0, 74.2]


def init():
    global model
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "diabetes.pkl")
    model = joblib.load(model_path)


@input_schema("data", PandasParameterType(input_sample))
@output_schema(StandardPythonParameterType(output_sample))
def run(data):
    # Select by name: JSON records carry no column order, and the model was fitted on
    # a plain array in FEATURES order.
    result = model.predict(data[FEATURES].to_numpy())
    return result.tolist()
