"""Swagger 2.0 and OpenAPI 3.0/3.1 documents for an entry script's `run()`.

The documents have the shape Azure's inference server generates (same paths, operation
ids, definition names and descriptions), because clients such as Power BI and Azure's
own consumers read them: `ServiceInput` and `ServiceOutput` come straight from the
`inference_schema` decorators, so their `format`s (`numpy.ndarray`,
`pandas.DataFrame:records`) and `example`s reach those clients unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from inference_schema.schema_util import (
    get_input_schema,
    get_output_schema,
    get_supported_versions,
    is_schema_decorated,
)

SUPPORTED_VERSIONS = ("2", "3", "3.1")

# inference_schema names versions "2.0", "3.0", "3.1"; the query parameter uses ours.
_SCHEMA_LIBRARY_VERSION = {"2": "2.0", "3": "3.0", "3.1": "3.1"}
_OPENAPI_VERSION = {"3": "3.0.3", "3.1": "3.1.0"}

_HEALTH_DESCRIPTION = "Simple health check endpoint to ensure the service is up at any given point."
_HEALTHY_DESCRIPTION = (
    "If service is up and running, this response will be returned with the content 'Healthy'"
)
_SCORE_DESCRIPTION = "Run web service's model and get the prediction output"
_INPUT_DESCRIPTION = "The input payload for executing the real-time machine learning service."
_OUTPUT_DESCRIPTION = (
    "The service processed the input correctly and provided a result prediction, if applicable."
)
_ERROR_DESCRIPTION = "The service failed to execute due to an error."
_SWAGGER_DESCRIPTION = "Get the Swagger specification."
_BEARER_SCHEME = {
    "type": "apiKey",
    "name": "Authorization",
    "in": "header",
    "description": "For example: Bearer abc123",
}
_ERROR_RESPONSE_SCHEMA = {"type": "object", "properties": {"message": {"type": "string"}}}


def build_document(
    run: Callable[..., Any],
    version: str,
    *,
    service_name: str = "ML service",
    service_version: str = "1.0",
) -> dict[str, Any]:
    """Return a fresh document for `run` in the given version ("2", "3" or "3.1").

    Raises ValueError naming the accepted versions when `version` is unknown, or when
    the decorators' sample data cannot be described in it (Swagger 2.0 has no
    mixed-type arrays).
    """
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"Swagger version {version!r} is not valid; "
            f"supported versions: {', '.join(SUPPORTED_VERSIONS)}"
        )
    input_schema, output_schema = _service_schemas(run, version)
    info = {
        "title": service_name,
        "description": f"API specification for the Azure Machine Learning service {service_name}",
        "version": service_version,
    }
    if version == "2":
        return _swagger2(info, input_schema, output_schema)
    return _openapi3(_OPENAPI_VERSION[version], info, input_schema, output_schema)


def _service_schemas(run: Callable[..., Any], version: str) -> tuple[Any, Any]:
    """The ServiceInput and ServiceOutput schemas for `run`, as copies we may hand out."""
    if not is_schema_decorated(run):
        # Like Azure: an undecorated run() takes and returns anything.
        return {"type": "object", "example": {}}, {"type": "object", "example": {}}
    script_versions = [
        ours
        for ours, theirs in _SCHEMA_LIBRARY_VERSION.items()
        if theirs in get_supported_versions(run)
    ]
    if version not in script_versions:
        raise ValueError(
            f"Swagger version {version!r} cannot describe this entry script's schema; "
            f"supported versions: {', '.join(script_versions)}"
        )
    # inference_schema returns its registry's own dicts; a caller editing the document
    # must not change what the next call (or the decorators) see.
    return copy.deepcopy(get_input_schema(run)), copy.deepcopy(get_output_schema(run))


def _swagger2(info: dict[str, str], input_schema: Any, output_schema: Any) -> dict[str, Any]:
    def ref(name: str) -> dict[str, str]:
        return {"$ref": f"#/definitions/{name}"}

    def error() -> dict[str, Any]:
        return {"description": _ERROR_DESCRIPTION, "schema": ref("ErrorResponse")}

    return {
        "swagger": "2.0",
        "info": info,
        "schemes": ["https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {"Bearer": dict(_BEARER_SCHEME)},
        "paths": {
            "/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": _HEALTH_DESCRIPTION,
                    "responses": {
                        "200": {
                            "description": _HEALTHY_DESCRIPTION,
                            "schema": {"type": "string"},
                            "examples": {"application/json": "Healthy"},
                        },
                        "default": error(),
                    },
                }
            },
            "/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": _SCORE_DESCRIPTION,
                    "security": [{"Bearer": []}],
                    "parameters": [
                        {
                            "name": "serviceInputPayload",
                            "in": "body",
                            "description": _INPUT_DESCRIPTION,
                            "schema": ref("ServiceInput"),
                        }
                    ],
                    "responses": {
                        "200": {"description": _OUTPUT_DESCRIPTION, "schema": ref("ServiceOutput")},
                        "default": error(),
                    },
                }
            },
            "/swagger.json": {
                "get": {
                    "operationId": "GetSwaggerSpec",
                    "description": _SWAGGER_DESCRIPTION,
                    "parameters": [
                        {
                            "name": "version",
                            "in": "query",
                            "required": False,
                            "type": "string",
                            "enum": list(SUPPORTED_VERSIONS),
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The Swagger specification.",
                            "schema": {"type": "object"},
                        },
                        "default": error(),
                    },
                }
            },
        },
        "definitions": {
            "ServiceInput": input_schema,
            "ServiceOutput": output_schema,
            "ErrorResponse": copy.deepcopy(_ERROR_RESPONSE_SCHEMA),
        },
    }


def _openapi3(
    openapi: str, info: dict[str, str], input_schema: Any, output_schema: Any
) -> dict[str, Any]:
    def json_content(name: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}

    def error() -> dict[str, Any]:
        return {"description": _ERROR_DESCRIPTION, "content": json_content("ErrorResponse")}

    return {
        "openapi": openapi,
        "info": info,
        "security": [{"Bearer": []}],
        "paths": {
            "/": {
                "get": {
                    "operationId": "ServiceHealthCheck",
                    "description": _HEALTH_DESCRIPTION,
                    "responses": {
                        "200": {
                            "description": _HEALTHY_DESCRIPTION,
                            "content": {
                                "text/plain": {"schema": {"type": "string", "example": "Healthy"}}
                            },
                        },
                        "default": error(),
                    },
                }
            },
            "/score": {
                "post": {
                    "operationId": "RunMLService",
                    "description": _SCORE_DESCRIPTION,
                    "security": [{"Bearer": []}],
                    "requestBody": {
                        "description": _INPUT_DESCRIPTION,
                        "content": json_content("ServiceInput"),
                    },
                    "responses": {
                        "200": {
                            "description": _OUTPUT_DESCRIPTION,
                            "content": json_content("ServiceOutput"),
                        },
                        "default": error(),
                    },
                }
            },
            "/swagger.json": {
                "get": {
                    "operationId": "GetSwaggerSpec",
                    "description": _SWAGGER_DESCRIPTION,
                    "parameters": [
                        {
                            "name": "version",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": list(SUPPORTED_VERSIONS)},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "The Swagger specification.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        "default": error(),
                    },
                }
            },
        },
        "components": {
            "schemas": {
                "ServiceInput": input_schema,
                "ServiceOutput": output_schema,
                "ErrorResponse": copy.deepcopy(_ERROR_RESPONSE_SCHEMA),
            },
            "securitySchemes": {"Bearer": dict(_BEARER_SCHEME)},
        },
    }
