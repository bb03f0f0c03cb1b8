"""init() writes AZUREML_MODEL_DIR to the file named by MODEL_DIR_REPORT, then loads for long."""

import os
import time


def init():
    with open(os.environ["MODEL_DIR_REPORT"], "w") as report:
        report.write(os.environ["AZUREML_MODEL_DIR"])
    time.sleep(60)


def run(raw_data):
    return raw_data
