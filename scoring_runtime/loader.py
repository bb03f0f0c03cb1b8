"""Load an entry script by path and decide, once, how run() wants its input.

The rules are Azure's: `@rawhttp` gets the request object, an `inference_schema`
decorated run() gets one keyword argument per top-level JSON key, anything else gets the
body as a string. A parameter named `request_headers` receives the headers in every mode.
"""

from __future__ import annotations

import enum
import importlib.util
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from inference_schema.schema_util import is_schema_decorated

from scoring_runtime import azureml_shim
from scoring_runtime.aml_request import RAWHTTP_ATTRIBUTE

# Azure's server imports the script under this name; inference_schema keys its
# registry by module name, so keeping it costs nothing and avoids surprises.
MODULE_NAME = "entry_module"
HEADERS_PARAMETER = "request_headers"


class ScriptLoadError(Exception):
    """The entry script cannot be served; the message says why."""


class InputMode(enum.Enum):
    TEXT = "text"  # undecorated: the body as a str
    SCHEMA = "schema"  # inference_schema: top-level JSON keys as keyword arguments
    RAW = "raw"  # @rawhttp: an AMLRequest


@dataclass(frozen=True)
class EntryScript:
    path: Path
    module: ModuleType
    init: Callable[[], Any] | None
    run: Callable[..., Any]
    mode: InputMode
    # TEXT and RAW: the parameter receiving the body or request.
    input_parameter: str
    # SCHEMA: every parameter but request_headers, with its default.
    parameters: tuple[inspect.Parameter, ...]
    wants_request_headers: bool


def load_entry_script(path: Path, source_dir: Path) -> EntryScript:
    """Import the script (raising ScriptLoadError) and analyse its run()."""
    if not path.is_file():
        raise ScriptLoadError(f"entry script {path} does not exist")
    source = str(source_dir)
    if source not in sys.path:
        # First, like the script's own folder when run as `python score.py`.
        sys.path.insert(0, source)
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise ScriptLoadError(f"entry script {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: dataclasses, pickle and typing look modules up there.
    sys.modules[MODULE_NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        sys.modules.pop(MODULE_NAME, None)
        raise ScriptLoadError(f"importing {path} failed") from error

    run = getattr(module, "run", None)
    # Some Azure SDKs generate a driver module that forwards to the real script.
    driver = getattr(module, "driver_module", None)
    if isinstance(driver, ModuleType) and callable(getattr(driver, "run", None)):
        run = driver.run
    if not callable(run):
        raise ScriptLoadError(f"entry script {path} does not define a run() function")
    init = getattr(module, "init", None)
    if init is not None and not callable(init):
        raise ScriptLoadError(f"entry script {path} defines init, but it is not a function")
    return _analyse(path, module, init, run)


def _analyse(
    path: Path, module: ModuleType, init: Callable[[], Any] | None, run: Callable[..., Any]
) -> EntryScript:
    try:
        signature = inspect.signature(run)
    except (TypeError, ValueError) as error:
        raise ScriptLoadError(f"cannot read run()'s parameters: {error}") from None
    allowed = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    if any(p.kind not in allowed for p in signature.parameters.values()):
        raise ScriptLoadError("run() cannot accept positional-only arguments, *args, or **kwargs")
    wants_headers = HEADERS_PARAMETER in signature.parameters
    parameters = tuple(p for p in signature.parameters.values() if p.name != HEADERS_PARAMETER)
    if not parameters:
        raise ScriptLoadError("run() needs a parameter for the input data")

    raw = azureml_shim.rawhttp_requested() or getattr(run, RAWHTTP_ATTRIBUTE, False)
    decorated = is_schema_decorated(run)
    if raw and decorated:
        raise ScriptLoadError("run() cannot be decorated with both @rawhttp and @input_schema")
    mode = InputMode.RAW if raw else InputMode.SCHEMA if decorated else InputMode.TEXT
    return EntryScript(
        path=path,
        module=module,
        init=init,
        run=run,
        mode=mode,
        input_parameter=parameters[0].name,
        parameters=parameters,
        wants_request_headers=wants_headers,
    )


def run_init(script: EntryScript) -> None:
    """Call init() once; its exception propagates so the caller can log it and exit."""
    if script.init is not None:
        script.init()
