"""Rewrites a replica's swagger document so it describes the service behind the router.

A replica documents itself at `/score` on its own address; a client of the router needs
the router's scoring URI and the service's auth scheme (Power BI reads both).
"""

from __future__ import annotations

import copy
from typing import Any

SCORE_PATH = "/score"
SECURITY_NAME = "Bearer"


def rewrite_document(document: dict[str, Any], base_url: str, auth_scheme: str) -> dict[str, Any]:
    """Point `document` at `base_url` (scheme://host/api/v1/service/NAME) and declare
    bearer auth unless `auth_scheme` is "none". Swagger 2.0 and OpenAPI 3.x."""
    doc = copy.deepcopy(document)
    scheme, _, rest = base_url.partition("://")
    host, _, base_path = rest.partition("/")
    paths = doc.get("paths") or {}
    # Only the scoring route exists on the router; the replica's own "/" does not.
    doc["paths"] = {p: spec for p, spec in paths.items() if p == SCORE_PATH}
    secured = auth_scheme != "none"
    if "swagger" in doc:
        doc["host"] = host
        doc["basePath"] = "/" + base_path
        doc["schemes"] = [scheme]
        if secured:
            doc["securityDefinitions"] = {
                SECURITY_NAME: {
                    "type": "apiKey",
                    "name": "Authorization",
                    "in": "header",
                    "description": "For example: Bearer abc123",
                }
            }
    else:
        doc["servers"] = [{"url": base_url}]
        if secured:
            components = doc.setdefault("components", {})
            components.setdefault("securitySchemes", {})[SECURITY_NAME] = {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT" if auth_scheme == "token" else "key",
            }
    if secured:
        doc["security"] = [{SECURITY_NAME: []}]
    else:
        doc.pop("security", None)
    return doc
