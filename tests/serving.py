"""What the service's tests share: raw HTTP requests, the app on uvicorn without Ray, and waiting
on the page in the ``browser`` fixture (tests/conftest.py) (tests/test_serve.py, tests/test_serve_hostile.py)."""

import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.parse



def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(base: str, path: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, bytes]:
    """A raw request: the path goes on the wire exactly as written (no client-side normalising)."""
    parsed = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, {key.lower(): value for key, value in response.getheaders()}, response.read()
    finally:
        connection.close()


def get_json(base: str, path: str) -> tuple[int, dict]:
    status, headers, body = get(base, path)
    assert headers["content-type"] == "application/json", (path, status, body[:200])
    return status, json.loads(body)


def search(base: str, query: str, **params) -> list[dict]:
    status, body = get_json(base, "/api/search?" + urllib.parse.urlencode({"q": query, **params}))
    assert status == 200, body
    assert isinstance(body["took_ms"], float)
    return body["results"]


@contextlib.contextmanager
def running(app, host: str = "127.0.0.1"):
    """The app on a real uvicorn server on loopback (no Ray in between); yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# ---------------------------------------------------------------------------- a real browser

def wait_for(driver, script: str, timeout: float = 30):
    """Poll a JavaScript expression until it is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(f"return {script};")
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}; status: {driver.find_element('id', 'status').text!r}")
