"""@rawhttp scripts: the request object run() receives and the AMLResponse it returns
(scoring_runtime/aml_request.py, aml_response.py, azureml_shim.py), over a Unix socket."""

from __future__ import annotations

import subprocess
import sys

import pytest

from scoring_runtime.aml_request import AMLRequest, HeaderMap, QueryArgs
from scoring_runtime.aml_response import AMLResponse
from tests.helpers.runtime_proc import RuntimeProcess


@pytest.fixture(scope="module")
def raw(runtime_for) -> RuntimeProcess:
    return runtime_for("raw_http.py", uds=True)


@pytest.fixture(scope="module")
def client(raw):
    with raw.client() as client:
        yield client


def test_rawhttp_run_sees_the_request(client) -> None:
    response = client.post(
        "/score?a=1&a=2&b=x",
        content=b'{"k": [1, 2]}',
        headers={"Content-Type": "application/json", "X-Custom": "yes"},
    )
    assert response.status_code == 200
    assert response.json() == {
        "method": "POST",
        "path": "/score",
        "full_path": "/score?a=1&a=2&b=x",
        "args": {"a": ["1", "2"], "b": ["x"]},
        "content_type": "application/json",
        "header_has_custom": True,
        "data": '{"k": [1, 2]}',
        "json": {"k": [1, 2]},
    }


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_rawhttp_run_gets_every_method(client, method: str) -> None:
    response = client.request(method, "/score")
    assert response.status_code == 200
    assert response.json()["method"] == method
    assert response.json()["full_path"] == "/score?"


def test_get_json_is_none_for_a_non_json_body(client) -> None:
    response = client.post("/score", content=b"a,b", headers={"Content-Type": "text/csv"})
    assert response.json()["json"] is None
    assert response.json()["data"] == "a,b"


def test_aml_response_sets_status_headers_and_body(client) -> None:
    response = client.post("/score?status=418", content=b"short and stout")
    assert response.status_code == 418
    assert response.content == b"short and stout"
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    # Azure splits comma-separated values into repeated headers.
    assert response.headers.get_list("x-custom") == ["a", "b"]
    assert response.headers["access-control-allow-origin"] == "https://set.by.run"
    assert response.headers["x-ms-run-function-failed"] == "False"
    assert "x-request-id" in response.headers
    assert "x-ms-run-fn-exec-ms" in response.headers


def test_aml_response_with_5xx_is_marked_as_a_run_failure(client) -> None:
    response = client.post("/score?status=503", content=b"busy")
    assert response.status_code == 503
    assert response.headers["x-ms-run-function-failed"] == "True"


def test_aml_response_content_type_header_replaces_the_default(client) -> None:
    response = client.get("/score?image=1")
    assert response.headers["content-type"] == "image/png"
    assert response.headers.get_list("content-type") == ["image/png"]
    assert response.content == b"\x89PNG\r\n"


def test_aml_response_json_str_serialises_the_message(client) -> None:
    response = client.get("/score?json_str=1")
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"wrapped": True}


def test_runtime_log_says_the_azureml_imports_were_provided(raw) -> None:
    assert "azureml_shim=azureml.contrib.services" in raw.log()
    assert "mode=raw" in raw.ready_line


# -- the classes themselves, as a script uses them --


def test_header_map_reads_any_case_and_keeps_werkzeug_spelling() -> None:
    headers = HeaderMap.from_asgi(
        [(b"content-type", b"text/plain"), (b"x-multi", b"1"), (b"x-multi", b"2")]
    )
    assert dict(headers) == {"Content-Type": "text/plain", "X-Multi": "1,2"}
    assert headers["content-type"] == headers.get("CONTENT-TYPE") == "text/plain"
    assert "x-multi" in headers
    assert headers.getlist("X-Multi") == ["1", "2"]
    assert headers.get("missing", "default") == "default"


def test_query_args_behave_like_a_multidict() -> None:
    args = QueryArgs([("a", "1"), ("a", "2"), ("n", "x")])
    assert args["a"] == "1"
    assert args.getlist("a") == ["1", "2"]
    assert args.get("a", type=int) == 1
    assert args.get("n", default=0, type=int) == 0
    assert args.to_dict() == {"a": "1", "n": "x"}


def test_request_form_parses_urlencoded_bodies() -> None:
    request = AMLRequest(
        method="POST",
        path="/score",
        query_string=b"",
        headers=HeaderMap({"Content-Type": "application/x-www-form-urlencoded"}),
        body=b"a=1&b=two",
    )
    assert request.form.to_dict() == {"a": "1", "b": "two"}
    assert request.get_json() is None
    assert request.get_json(force=True, silent=True) is None


def test_aml_response_without_a_message_is_an_empty_json_object() -> None:
    response = AMLResponse(None, 204)
    assert response.data == b"{}"
    assert response.headers["Content-Type"] == "application/json"


def test_aml_response_headers_can_be_edited_after_construction() -> None:
    response = AMLResponse("hi", 200, {"X-One": "1"})
    response.headers["x-one"] = "replaced"
    response.headers.add("X-Two", 2)
    assert response.headers.getlist("X-One") == ["replaced"]
    assert response.headers["x-two"] == "2"
    assert response.get_data(as_text=True) == "hi"


def test_aml_response_refuses_a_dict_without_json_str() -> None:
    with pytest.raises(TypeError, match="json_str"):
        AMLResponse({"a": 1}, 200)


def test_shim_serves_both_azure_import_paths_without_azure_installed() -> None:
    # In a fresh interpreter: installing the shim in this test process would leak.
    code = (
        "from scoring_runtime import azureml_shim; azureml_shim.install()\n"
        "from azureml.contrib.services.aml_request import AMLRequest, rawhttp\n"
        "from azureml.contrib.services.aml_response import AMLResponse\n"
        "from azureml_inference_server_http.api.aml_response import AMLResponse as Other\n"
        "import sys\n"
        "assert AMLResponse is Other\n"
        "assert not any('azureml' in p for p in sys.path)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
