"""init() fails the way a missing model file makes it fail."""


def init():
    raise FileNotFoundError("model.pkl is not in AZUREML_MODEL_DIR")


def run(raw_data):
    return raw_data
