"""The router's rewrite of a replica's swagger document (pure)."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate

from router.swagger import rewrite_document

BASE = "https://scoring.example:8443/api/v1/service/diabetes"


def swagger2() -> dict[str, Any]:
    return {
        "swagger": "2.0",
        "info": {"title": "diabetes", "version": "1.0"},
        "host": "localhost:5001",
        "basePath": "/",
        "schemes": ["http"],
        "paths": {
            "/": {"get": {"responses": {"200": {"description": "Healthy"}}}},
            "/score": {
                "post": {
                    "parameters": [
                        {
                            "name": "body",
                            "in": "body",
                            "schema": {"type": "object"},
                            "required": True,
                        }
                    ],
                    "responses": {"200": {"description": "Scored", "schema": {"type": "object"}}},
                }
            },
        },
    }


def openapi3() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "diabetes", "version": "1.0"},
        "servers": [{"url": "http://localhost:5001"}],
        "paths": {
            "/score": {
                "post": {
                    "requestBody": {
                        "content": {"application/json": {"schema": {"type": "object"}}}
                    },
                    "responses": {"200": {"description": "Scored"}},
                }
            }
        },
    }


def test_swagger2_points_at_the_router_with_bearer_auth() -> None:
    doc = rewrite_document(swagger2(), BASE, "key")
    validate(doc)
    assert doc["host"] == "scoring.example:8443"
    assert doc["basePath"] == "/api/v1/service/diabetes"
    assert doc["schemes"] == ["https"]
    assert list(doc["paths"]) == ["/score"]
    assert doc["securityDefinitions"]["Bearer"]["name"] == "Authorization"
    assert doc["security"] == [{"Bearer": []}]


def test_openapi3_gets_the_scoring_server_and_scheme() -> None:
    doc = rewrite_document(openapi3(), BASE, "token")
    validate(doc)
    assert doc["servers"] == [{"url": BASE}]
    scheme = doc["components"]["securitySchemes"]["Bearer"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert doc["security"] == [{"Bearer": []}]


def test_no_auth_declares_no_security_and_leaves_the_input_alone() -> None:
    original = swagger2()
    doc = rewrite_document(original, BASE, "none")
    validate(doc)
    assert "security" not in doc and "securityDefinitions" not in doc
    assert original["host"] == "localhost:5001"
