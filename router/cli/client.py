"""The management API (/api/v1/manage) as Python calls, and where its admin key comes from."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from router.cli.errors import ApiError, CliError

DEFAULT_URL = "http://127.0.0.1:8080"
MANAGE_PATH = "/api/v1/manage"
ADMIN_KEY_FILE = "admin.key"
# Management calls answer at once (202 and settle in the background); this only bounds
# a server that stopped answering.
REQUEST_TIMEOUT_S = 30.0


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """The folder `mlfe serve` keeps its state in: MLFE_STATE_DIR, else ~/.mlfe."""
    return Path(environ.get("MLFE_STATE_DIR") or Path.home() / ".mlfe").expanduser()


def resolve_admin_key(flag: str | None, state_dir: str | None, environ: Mapping[str, str]) -> str:
    """--admin-key, else MLFE_ADMIN_KEY, else STATE/admin.key written by `mlfe serve`."""
    if flag:
        return flag
    from_environment = environ.get("MLFE_ADMIN_KEY", "").strip()
    if from_environment:
        return from_environment
    folder = Path(state_dir).expanduser() if state_dir else default_state_dir(environ)
    path = folder / ADMIN_KEY_FILE
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        raise CliError(
            f"no admin key: {path} does not exist. `mlfe serve` writes it on first start;"
            " pass --state-dir if the server uses another folder, or give the key with"
            " --admin-key or MLFE_ADMIN_KEY"
        ) from None
    except OSError as error:
        raise CliError(f"cannot read the admin key from {path}: {error.strerror}") from None
    if not key:
        raise CliError(f"the admin key file {path} is empty")
    return key


class ManageClient:
    """The management API over httpx: JSON in and out, `CliError` for every failure."""

    def __init__(
        self,
        url: str,
        admin_key: str | Callable[[], str],
        *,
        timeout: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self.url = url.rstrip("/")
        # A callable is read at the first request, so a usage error found while building
        # the request is reported before a missing key file is.
        self._admin_key = admin_key
        self._http = httpx.Client(base_url=self.url + MANAGE_PATH, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ManageClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, str | int] | None = None,
    ) -> Any:
        if "Authorization" not in self._http.headers:
            key = self._admin_key() if callable(self._admin_key) else self._admin_key
            self._http.headers["Authorization"] = f"Bearer {key}"
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.ConnectError:
            raise CliError(f"cannot reach mlfe at {self.url}: is `mlfe serve` running?") from None
        except httpx.TimeoutException:
            raise CliError(f"mlfe at {self.url} did not answer in time") from None
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            raise CliError(f"cannot talk to mlfe at {self.url}: {error}") from None
        if response.is_success:
            try:
                return response.json()
            except ValueError:
                raise CliError(
                    f"{self.url} answered {method} {path} with something that is not JSON:"
                    " is it mlfe?"
                ) from None
        raise ApiError(response.status_code, self._error_message(response))

    def _error_message(self, response: httpx.Response) -> str:
        try:
            message = response.json()["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {response.status_code} from {self.url}: {response.text[:200]}"
        if response.status_code == 401:
            message += " (check --admin-key, MLFE_ADMIN_KEY or the admin.key of --state-dir)"
        return str(message)

    # The routes, one method each, so commands read as what they do.

    def services(self) -> list[dict[str, Any]]:
        answer = self.call("GET", "/services")
        if not isinstance(answer, list) or not all(isinstance(item, dict) for item in answer):
            raise CliError(f"{self.url} answered GET /services with something that is not mlfe's")
        return answer

    def service(self, name: str) -> dict[str, Any]:
        return self._object("GET", _path("services", name))

    def create_service(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", "/services", body=body)

    def update_service(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("PATCH", _path("services", name), body=body)

    def delete_service(self, name: str) -> dict[str, Any]:
        return self._object("DELETE", _path("services", name))

    def keys(self, name: str) -> dict[str, Any]:
        return self._object("GET", _path("services", name, "keys"))

    def regenerate_key(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", _path("services", name, "regenerate-key"), body=body)

    def token(self, name: str) -> dict[str, Any]:
        return self._object("POST", _path("services", name, "token"))

    def create_version(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("POST", _path("services", name, "versions"), body=body)

    def update_version(self, name: str, version: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._object("PATCH", _path("services", name, "versions", version), body=body)

    def delete_version(self, name: str, version: str) -> dict[str, Any]:
        return self._object("DELETE", _path("services", name, "versions", version))

    def logs(self, name: str, version: str | None, tail: int) -> dict[str, Any]:
        params: dict[str, str | int] = {"tail": tail}
        if version:
            params["version"] = version
        return self._object("GET", _path("services", name, "logs"), params=params)

    def _object(self, method: str, path: str, **options: Any) -> dict[str, Any]:
        answer = self.call(method, path, **options)
        if not isinstance(answer, dict):
            raise CliError(f"{self.url} answered {method} {path} with something that is not mlfe's")
        return answer


def _path(*segments: str) -> str:
    # A name is one path segment whatever it contains; the server judges whether it is valid.
    return "".join("/" + quote(segment, safe="") for segment in segments)
