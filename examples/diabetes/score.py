# An Azure ML entry script as Azure's documentation writes them: it runs unchanged on
# Azure's inference server and on mlfe's scoring runtime.
import os

import joblib
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema, output_schema

# Two rows of the diabetes data set: age, sex, bmi, bp, s1..s6 (already scaled).
input_sample = np.array(
    [
        [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018],
        [-0.002, -0.045, -0.051, -0.026, -0.008, -0.019, 0.074, -0.039, -0.068, -0.092],
    ]
)
output_sample = np.array([199.0, 74.2])


def init():
    global model
    # AZUREML_MODEL_DIR is the folder the registered model was placed in.
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "diabetes.pkl")
    model = joblib.load(model_path)


@input_schema("data", NumpyParameterType(input_sample))
@output_schema(NumpyParameterType(output_sample))
def run(data):
    result = model.predict(data)
    return result.tolist()
