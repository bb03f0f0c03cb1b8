"""A replica that answers /score with a chunked body, one chunk every 50 ms.

Stands in for a "bring your own" replica that streams; mlfe's runtime always sends
content-length bodies.
"""

import asyncio
import sys

import uvicorn


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"Healthy"})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"x-replica", b"chunked")],
        }
    )
    for i in range(5):
        await send({"type": "http.response.body", "body": f"part{i};".encode(), "more_body": True})
        await asyncio.sleep(0.05)
    await send({"type": "http.response.body", "body": b"end"})


if __name__ == "__main__":
    uvicorn.run(app, uds=sys.argv[1], log_level="warning")
