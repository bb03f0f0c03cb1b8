"""How run() gets its input in each mode and how its result becomes a response
(scoring_runtime/invoke.py), through real runtime processes."""

from __future__ import annotations

import json

import pytest

from tests.helpers.runtime_proc import RuntimeProcess

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def text(runtime_for) -> RuntimeProcess:
    return runtime_for("echo_text.py")


@pytest.fixture(scope="module")
def numpy_schema(runtime_for) -> RuntimeProcess:
    return runtime_for("schema_numpy.py")


@pytest.fixture(scope="module")
def pandas_schema(runtime_for) -> RuntimeProcess:
    return runtime_for("schema_pandas.py")


@pytest.fixture(scope="module")
def standard_schema(runtime_for) -> RuntimeProcess:
    return runtime_for("schema_standard.py")


@pytest.fixture(scope="module")
def automl(runtime_for) -> RuntimeProcess:
    return runtime_for("automl_style.py")


# -- undecorated run(): the body as a string --


def test_undecorated_run_gets_the_body_as_text(text) -> None:
    with text.client() as client:
        response = client.post("/score", content='{"data": [1, "é"]}'.encode())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"raw": '{"data": [1, "é"]}'}


def test_undecorated_run_ignores_content_type(text) -> None:
    with text.client() as client:
        response = client.post("/score", content=b"plain", headers={"Content-Type": "text/csv"})
    assert response.json() == {"raw": "plain"}


def test_body_that_is_not_utf8_is_400(text) -> None:
    with text.client() as client:
        response = client.post("/score", content=b"\xff\xfe\xfa")
    assert response.status_code == 400
    assert "UTF-8" in response.json()["message"]


def test_get_score_parses_each_query_parameter_as_json(text) -> None:
    with text.client() as client:
        response = client.get("/score?a=1&b=[1,2]&c=word&d=null&e=%7B%22k%22%3A2%7D")
    received = json.loads(response.json()["raw"])
    assert received == {"a": 1, "b": [1, 2], "c": "word", "d": None, "e": {"k": 2}}


def test_get_score_turns_repeated_keys_into_a_list(text) -> None:
    with text.client() as client:
        response = client.get("/score?foo=bar1&foo=2&x=y")
    assert json.loads(response.json()["raw"]) == {"foo": ["bar1", 2], "x": "y"}


def test_numpy_and_pandas_results_are_json(text) -> None:
    with text.client() as client:
        numpy_result = client.post("/score", content=b"numpy").json()
        pandas_result = client.post("/score", content=b"pandas").json()
    assert numpy_result == {"array": [0, 1, 2], "scalar": 1.5}
    assert pandas_result == {
        "frame": [{"a": 1, "b": 0.5}, {"a": 2, "b": None}],
        "series": [1, 2],
    }


def test_string_result_is_sent_as_a_json_string(text) -> None:
    with text.client() as client:
        response = client.post("/score", content=b"json-string")
    assert response.json() == '{"already": "json"}'


def test_run_raising_is_500_with_the_traceback_only_in_the_log(text) -> None:
    with text.client() as client:
        response = client.post("/score", content=b"raise")
    assert response.status_code == 500
    assert response.headers["x-ms-run-function-failed"] == "True"
    assert set(response.json()) == {"message"}
    assert "secret detail" not in response.text
    assert "Traceback" in text.log()
    assert "ValueError: secret detail from run" in text.log()


def test_unserializable_result_is_500_naming_the_type(text) -> None:
    with text.client() as client:
        response = client.post("/score", content=b"unserializable")
    assert response.status_code == 500
    assert "object" in response.json()["message"]
    assert response.headers["x-ms-run-function-failed"] == "True"


# -- inference_schema decorated run(): JSON keys as keyword arguments --


def test_numpy_schema_converts_the_input(numpy_schema) -> None:
    with numpy_schema.client() as client:
        response = client.post("/score", json={"data": [[1, 2, 3], [4, 5, 6]]})
    assert response.status_code == 200
    assert response.json() == [6.0, 15.0]


def test_pandas_schema_converts_records(pandas_schema) -> None:
    with pandas_schema.client() as client:
        response = client.post("/score", json={"data": [{"age": 40, "bmi": 2.5}]})
    assert response.status_code == 200
    assert response.json() == [42.5]


def test_json_content_type_with_charset_is_accepted(numpy_schema) -> None:
    with numpy_schema.client() as client:
        response = client.post(
            "/score",
            content=b'{"data": [[1, 1, 1]]}',
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
    assert response.json() == [3.0]


def test_python_style_nan_in_the_body_is_accepted(numpy_schema) -> None:
    # json.dumps writes NaN; Azure's server reads it with json.loads, so must we.
    with numpy_schema.client() as client:
        response = client.post("/score", content=b'{"data": [[1, NaN, 1]]}', headers=JSON)
    assert response.status_code == 200
    assert response.json() == [None]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", "empty"),
        (b"{not json", "could not be decoded as JSON"),
        (b"[1, 2, 3]", "should be a JSON dictionary"),
        (b'{"other": 1}', "'data'"),
    ],
)
def test_schema_input_errors_are_400_naming_the_problem(numpy_schema, body, expected) -> None:
    with numpy_schema.client() as client:
        response = client.post("/score", content=body, headers=JSON)
    assert response.status_code == 400
    assert expected in response.json()["message"]
    assert "x-ms-run-fn-exec-ms" not in response.headers


def test_schema_input_with_non_json_content_type_is_415(numpy_schema) -> None:
    with numpy_schema.client() as client:
        for headers in ({"Content-Type": "text/plain"}, {}):
            response = client.post("/score", content=b'{"data": [[1, 2, 3]]}', headers=headers)
            assert response.status_code == 415
            assert "application/json" in response.json()["message"]


def test_defaults_are_honoured_and_extra_keys_ignored(standard_schema) -> None:
    with standard_schema.client() as client:
        response = client.post("/score", json={"name": "bob", "ignored": True})
    assert response.json()["greeting"] == "hello bob hello bob"


def test_every_parameter_comes_from_its_key(standard_schema) -> None:
    with standard_schema.client() as client:
        response = client.post("/score", json={"name": "ann", "count": 1})
    assert response.json()["greeting"] == "hello ann"


def test_get_score_feeds_query_parameters_to_a_decorated_run(standard_schema) -> None:
    with standard_schema.client() as client:
        response = client.get("/score?name=zed&count=3")
    assert response.json()["greeting"] == "hello zed hello zed hello zed"


def test_request_headers_reach_run_case_insensitively(standard_schema) -> None:
    with standard_schema.client() as client:
        response = client.post("/score", json={"name": "x"}, headers={"X-Custom": "value-1"})
    result = response.json()
    assert result["custom_header"] == "value-1"
    # Keys are spelled as Azure's (werkzeug's) dict(request.headers) spells them.
    assert "X-Custom" in result["header_keys"]
    assert "Content-Type" in result["header_keys"]


def test_automl_inputs_and_global_parameters(automl) -> None:
    body = {"Inputs": {"data": [{"x": 1.0, "y": 2.0}, {"x": 3.0, "y": 4.0}]}}
    with automl.client() as client:
        default = client.post("/score", json=body)
        doubled = client.post("/score", json={**body, "GlobalParameters": {"method": "double"}})
    assert default.json() == {"Results": [3.0, 7.0]}
    assert doubled.json() == {"Results": [6.0, 14.0]}


def test_schema_conversion_failure_is_a_run_failure(numpy_schema) -> None:
    # inference_schema converts inside the decorated run(), as on Azure.
    with numpy_schema.client() as client:
        response = client.post("/score", json={"data": "not an array"})
    assert response.status_code == 500
    assert response.headers["x-ms-run-function-failed"] == "True"
