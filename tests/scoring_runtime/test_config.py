"""Flags and environment variables into RuntimeConfig (scoring_runtime/config.py); pure."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoring_runtime.config import DEFAULT_SCORING_TIMEOUT_MS, ModelSpec, parse_config


@pytest.fixture()
def script(tmp_path: Path) -> Path:
    path = tmp_path / "score.py"
    path.write_text("def init(): pass\ndef run(data): return data\n")
    return path


def test_defaults(script: Path) -> None:
    config = parse_config(["--entry-script", str(script), "--port", "5001"], {})
    assert config.entry_script == script
    assert config.source_dir == script.parent
    assert (config.host, config.port, config.uds) == ("127.0.0.1", 5001, None)
    assert config.max_concurrent == 1
    assert config.scoring_timeout_ms == DEFAULT_SCORING_TIMEOUT_MS
    assert config.cors_origins == ()
    assert config.model_dir is None


def test_environment_variables_fill_in_for_flags(script: Path, tmp_path: Path) -> None:
    config = parse_config(
        ["--uds", "/tmp/x.sock"],
        {
            "AZUREML_ENTRY_SCRIPT": str(script),
            "AZUREML_SOURCE_DIRECTORY": str(tmp_path),
            "AZUREML_MODEL_DIR": "/models",
            "SCORING_TIMEOUT_MS": "500",
            "AML_CORS_ORIGINS": "https://a.example, https://b.example",
            "MLFE_MAX_CONCURRENT": "4",
        },
    )
    assert config.entry_script == script
    assert config.source_dir == tmp_path
    assert config.model_dir == "/models"
    assert config.scoring_timeout_ms == 500
    assert config.cors_origins == ("https://a.example", "https://b.example")
    assert config.max_concurrent == 4
    assert config.uds == Path("/tmp/x.sock")


def test_flags_win(script: Path, tmp_path: Path) -> None:
    config = parse_config(
        [
            "--entry-script", str(script), "--port", "0", "--model-dir", str(tmp_path),
            "--scoring-timeout-ms", "9", "--cors-origins", "*", "--max-concurrent", "2",
        ],
        {"AZUREML_MODEL_DIR": "/env", "SCORING_TIMEOUT_MS": "1", "AML_CORS_ORIGINS": "x",
         "MLFE_MAX_CONCURRENT": "7"},
    )  # fmt: skip
    assert config.model_dir == str(tmp_path)
    assert config.scoring_timeout_ms == 9
    assert config.cors_origins == ("*",)
    assert config.max_concurrent == 2


def test_models_replace_the_model_dir_variable(script: Path, tmp_path: Path) -> None:
    config = parse_config(
        ["--entry-script", str(script), "--port", "0", "--model", f"m:2:{tmp_path}"],
        {"AZUREML_MODEL_DIR": "/env"},
    )
    assert config.model_dir is None
    assert config.models == (ModelSpec("m", "2", tmp_path),)


def test_entry_script_relative_to_the_source_dir(script: Path) -> None:
    config = parse_config(
        ["--entry-script", "score.py", "--source-dir", str(script.parent), "--port", "0"], {}
    )
    assert config.entry_script == script


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--port", "70000"], {}, "between 0 and 65535"),
        (["--port", "1", "--max-concurrent", "0"], {}, "at least 1"),
        (["--port", "1"], {"SCORING_TIMEOUT_MS": "soon"}, "not an integer"),
        (["--port", "1", "--model", "nameonly"], {}, "NAME:VERSION:PATH"),
        (["--port", "1", "--model", "a:1:/x", "--model", "a:1:/y"], {}, "twice"),
        (["--port", "1", "--model", "../a:1:/x"], {}, "folder name"),
        (["--uds", "/tmp/s", "--host", "0.0.0.0"], {}, "--host"),
    ],
)
def test_invalid_configuration_exits_2_with_a_message(
    script: Path, capsys, argv: list[str], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_config(["--entry-script", str(script), *argv], env)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_entry_script_is_required(capsys) -> None:
    with pytest.raises(SystemExit):
        parse_config(["--port", "1"], {})
    assert "--entry-script" in capsys.readouterr().err


def test_listening_address_is_required(script: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        parse_config(["--entry-script", str(script)], {})
    assert "--port" in capsys.readouterr().err
