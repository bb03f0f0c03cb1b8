"""GET /swagger.json (scoring_runtime/swagger_documents.py): versions, aliases, the 404,
and swagger files shipped in the source folder."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from tests.helpers.runtime_proc import RuntimeProcess, run_runtime_to_exit


@pytest.fixture(scope="module")
def numpy_schema(runtime_for) -> RuntimeProcess:
    return runtime_for("schema_numpy.py")


@pytest.fixture(scope="module")
def with_files(runtime_for) -> RuntimeProcess:
    return runtime_for("app_with_swagger/score.py")


@pytest.mark.parametrize(
    ("query", "key", "version"),
    [
        ("", "swagger", "2.0"),
        ("?version=2", "swagger", "2.0"),
        ("?version=2.0", "swagger", "2.0"),
        ("?version=3", "openapi", "3.0.3"),
        ("?version=3.0", "openapi", "3.0.3"),
        ("?version=3.1", "openapi", "3.1.0"),
    ],
)
def test_generated_documents_are_valid(numpy_schema, query, key, version) -> None:
    with numpy_schema.client() as client:
        response = client.get(f"/swagger.json{query}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document[key] == version
    validate(document)


def test_generated_document_describes_the_decorated_input(numpy_schema) -> None:
    with numpy_schema.client() as client:
        document = client.get("/swagger.json?version=3").json()
    service_input = document["components"]["schemas"]["ServiceInput"]
    assert "data" in service_input["properties"]


def test_unknown_version_is_404_listing_the_supported_ones(numpy_schema) -> None:
    with numpy_schema.client() as client:
        response = client.get("/swagger.json?version=4")
    assert response.status_code == 404
    assert response.json()["message"].endswith("Supported versions: [2, 3, 3.1].")


def test_swagger_files_in_the_source_folder_win(with_files) -> None:
    with with_files.client() as client:
        default = client.get("/swagger.json").json()
        version3 = client.get("/swagger.json?version=3").json()
        version31 = client.get("/swagger.json?version=3.1").json()
    assert default["info"]["title"] == "hand written"
    assert version3["info"]["title"] == "hand written 3"
    # No swagger3.1.json in that folder: the generated document is served.
    assert version31["openapi"] == "3.1.0"
    validate(version31)


def test_other_methods_on_swagger_are_405(with_files) -> None:
    with with_files.client() as client:
        assert client.post("/swagger.json").status_code == 405


def test_malformed_swagger_file_stops_the_runtime(tmp_path) -> None:
    (tmp_path / "score.py").write_text("def init():\n    pass\n\ndef run(data):\n    return data\n")
    (tmp_path / "swagger.json").write_text("{not json")
    exited = run_runtime_to_exit(tmp_path / "score.py")
    assert exited.returncode == 3
    assert "swagger.json" in exited.log
