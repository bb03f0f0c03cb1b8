"""An undecorated script whose folder ships its own swagger files."""


def init():
    pass


def run(raw_data):
    return raw_data
