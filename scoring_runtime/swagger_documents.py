"""What GET /swagger.json serves: the script's own files, else generated documents.

Like Azure's server: without `?version` the Swagger 2.0 document is served; `2.0` and
`3.0` are accepted as aliases; `swagger.json` or `swagger2.json` in the source folder
replaces the 2.0 document, `swagger3.json` the 3.0 one and `swagger3.1.json` the 3.1 one.
Files are read at startup (a malformed one stops the runtime, like a failing init());
generated documents are built on first request and cached as bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from scoring_runtime.encoding import error_json
from scoring_runtime.log import log_event
from scoring_runtime.swagger import SUPPORTED_VERSIONS, build_document

DEFAULT_VERSION = "2"
_ALIASES = {"2": "2", "2.0": "2", "3": "3", "3.0": "3", "3.1": "3.1"}
_OVERRIDE_FILES = {
    "2": ("swagger.json", "swagger2.json"),
    "3": ("swagger3.json",),
    "3.1": ("swagger3.1.json",),
}


class SwaggerFileError(Exception):
    """A swagger file in the source folder is not valid JSON."""


class SwaggerDocuments:
    def __init__(
        self,
        run: Callable[..., Any],
        source_dir: Path,
        service_name: str = "ML service",
        service_version: str = "1.0",
    ) -> None:
        self._run = run
        self._service_name = service_name
        self._service_version = service_version
        self._cache: dict[str, tuple[int, bytes]] = {}
        self.override_files: dict[str, Path] = {}
        for version, names in _OVERRIDE_FILES.items():
            for name in names:
                path = source_dir / name
                if path.is_file():
                    self._cache[version] = (200, _read_document(path))
                    self.override_files[version] = path
                    break

    def get(self, requested: str | None) -> tuple[int, bytes]:
        """(status, JSON body) for `?version=requested`; 404 names the supported versions."""
        version = _ALIASES.get(DEFAULT_VERSION if requested is None else requested)
        if version is None:
            supported = ", ".join(SUPPORTED_VERSIONS)
            return 404, error_json(
                f"Swagger version [{requested}] is not valid. Supported versions: [{supported}]."
            )
        cached = self._cache.get(version)
        if cached is None:
            cached = self._cache[version] = self._generate(version)
        return cached

    def _generate(self, version: str) -> tuple[int, bytes]:
        try:
            document = build_document(
                self._run,
                version,
                service_name=self._service_name,
                service_version=self._service_version,
            )
        except ValueError as error:
            return 404, error_json(str(error))
        except Exception as error:
            # A schema inference_schema cannot describe must not take the route down.
            log_event("swagger_failed", logging.ERROR, exc_info=error, version=version)
            return 500, error_json(f"Swagger version [{version}] could not be generated.")
        return 200, orjson.dumps(document)


def _read_document(path: Path) -> bytes:
    try:
        return orjson.dumps(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError) as error:
        raise SwaggerFileError(f"{path} is not a readable JSON document: {error}") from None
