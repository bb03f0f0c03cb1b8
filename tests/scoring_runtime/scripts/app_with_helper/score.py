"""Imports a helper module from its source folder, as Azure deployments do."""

import scoring_helpers


def init():
    pass


def run(raw_data):
    return {"helper": scoring_helpers.VALUE}
