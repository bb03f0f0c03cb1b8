"""Make `azureml.contrib.services.aml_request` / `aml_response` importable without Azure.

Entry scripts written for Azure import `AMLRequest`, `rawhttp` and `AMLResponse` from
there (or from `azureml_inference_server_http.api`). When no such package is installed,
the runtime registers its own modules under those names in `sys.modules` for this
process only: nothing is added to sys.path or site-packages, and an installed Azure
package always wins.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

from scoring_runtime import aml_request, aml_response

# Packages a script may import the request/response classes from.
SHIMMED_PACKAGES = ("azureml.contrib.services", "azureml_inference_server_http.api")
REQUEST_MODULES = tuple(f"{package}.aml_request" for package in SHIMMED_PACKAGES)


def install() -> list[str]:
    """Register the shim for every package that is not importable; return the ones shimmed."""
    shimmed = []
    for package in SHIMMED_PACKAGES:
        if _importable(package):
            continue
        module = _ensure_package(package)
        for child_name, child in (("aml_request", aml_request), ("aml_response", aml_response)):
            sys.modules[f"{package}.{child_name}"] = child
            setattr(module, child_name, child)
        shimmed.append(package)
    return shimmed


def rawhttp_requested() -> bool:
    """Whether a script applied `@rawhttp` from our module or an installed Azure one."""
    if aml_request._rawHttpRequested:
        return True
    for name in REQUEST_MODULES:
        module = sys.modules.get(name)
        if module is not None and getattr(module, "_rawHttpRequested", False):
            return True
    return False


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except Exception:
        # A missing or broken parent package: treat as absent.
        return False


def _ensure_package(dotted: str) -> types.ModuleType:
    """Return the package `dotted`, importing real parents and creating missing ones."""
    parent: types.ModuleType | None = None
    parts = dotted.split(".")
    module: types.ModuleType | None = None
    for index in range(1, len(parts) + 1):
        name = ".".join(parts[:index])
        module = sys.modules.get(name)
        if module is None:
            try:
                module = importlib.import_module(name)
            except Exception:
                module = types.ModuleType(name, "Provided by mlfe's scoring runtime.")
                module.__path__ = []  # a package, so submodules can be registered
                sys.modules[name] = module
        if parent is not None:
            setattr(parent, parts[index - 1], module)
        parent = module
    assert module is not None
    return module
