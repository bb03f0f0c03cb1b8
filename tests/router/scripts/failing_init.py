"""A replica whose init() fails, as one with a missing model file would."""


def init():
    print("loading model from /nowhere/model.pkl", flush=True)
    raise FileNotFoundError("model.pkl is missing from the model directory")


def run(raw_data):
    return raw_data
