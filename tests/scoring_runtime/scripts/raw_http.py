"""@rawhttp run(): reads the request object and may answer with an AMLResponse."""

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    assert isinstance(request, AMLRequest)
    if request.args.get("status"):
        response = AMLResponse(
            request.get_data(), int(request.args["status"]), {"X-Custom": "a, b"}
        )
        response.headers["Access-Control-Allow-Origin"] = "https://set.by.run"
        return response
    if request.args.get("image"):
        return AMLResponse(b"\x89PNG\r\n", 200, {"Content-Type": "image/png"})
    if request.args.get("json_str"):
        return AMLResponse({"wrapped": True}, 201, json_str=True)
    return {
        "method": request.method,
        "path": request.path,
        "full_path": request.full_path,
        "args": request.args.to_dict(flat=False),
        "content_type": request.headers.get("content-type"),
        "header_has_custom": "X-Custom" in request.headers,
        "data": request.get_data(as_text=True),
        "json": request.get_json(silent=True),
    }
