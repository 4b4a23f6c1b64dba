"""The Connect client's retry and error policy, against a scripted local HTTP server (no Connect)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from ecst.connectors.client import ConnectClient
from ecst.exceptions import ConfigError, ConnectError


@pytest.fixture
def scripted():
    """A server answering each request with the next (status, body) of `replies`."""
    replies, seen = [], []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            seen.append((self.command, self.path, self.headers.get("Authorization")))
            status, body = replies.pop(0)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", replies, seen
    server.shutdown()
    server.server_close()


def test_409_rebalance_is_retried_until_it_succeeds(scripted):
    url, replies, seen = scripted
    replies += [(409, {"message": "rebalance"}), (409, {"message": "rebalance"}), (201, {"name": "c"})]
    client = ConnectClient(url, retries_409=3)
    assert client.put_config("c", {"a": "1"}) == {"name": "c"}
    assert [m for m, _, _ in seen] == ["PUT", "PUT", "PUT"]


def test_a_500_saying_a_rebalance_is_expected_is_retried_too(scripted):
    # seen on a shared worker while other connectors were created and deleted
    url, replies, seen = scripted
    replies += [(500, {"error_code": 500, "message": "Request cannot be completed because a rebalance "
                                                      "is expected"}), (201, {"name": "c"})]
    assert ConnectClient(url, retries_409=3).put_config("c", {"a": "1"}) == {"name": "c"}
    assert len(seen) == 2


def test_401_says_the_user_is_unauthorized_and_basic_auth_is_sent(scripted):
    url, replies, seen = scripted
    replies.append((401, {"message": "no"}))
    with pytest.raises(ConnectError, match="configured user is unauthorized"):
        ConnectClient(url, auth=("ops", "pw")).connectors()
    assert seen[0][2].startswith("Basic ")


def test_other_errors_carry_connects_message(scripted):
    url, replies, _ = scripted
    replies.append((500, {"error_code": 500, "message": "Failed to find any class"}))
    with pytest.raises(ConnectError, match="HTTP 500: Failed to find any class"):
        ConnectClient(url).connectors()


@pytest.mark.parametrize("url", ["foo", "http://[bad", "ftp://u:pw-123456@x"])
def test_a_connect_url_that_is_not_http_is_a_config_error_saying_how_to_write_one(url):
    expected = r"is not an http\(s\) URL: use http://HOST:PORT \(--connect-url"
    with pytest.raises(ConfigError, match=expected) as err:
        ConnectClient(url).connectors()
    assert "pw-123456" not in str(err.value)


def test_any_other_failed_request_is_a_connect_error(monkeypatch):
    client = ConnectClient("http://127.0.0.1:1")

    def broken(*args, **kwargs):
        raise requests.exceptions.ChunkedEncodingError("connection broken: IncompleteRead")

    monkeypatch.setattr(client.session, "request", broken)
    with pytest.raises(ConnectError, match=r"^GET /connectors to Kafka Connect at http://127.0.0.1:1 failed: "
                                           "connection broken"):
        client.connectors()
