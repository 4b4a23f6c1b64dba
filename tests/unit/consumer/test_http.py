"""The status server answers from its callables, and says why it is not ready."""


from ecst.consumer.http import StatusServer
from ecst.consumer.metrics import Metrics
from tests.integration.cli import http_get as get


def test_readyz_says_why_it_is_not_ready_and_healthz_is_separate():
    why = ["state store unavailable"]
    server = StatusServer("127.0.0.1", 0, healthy=lambda: True, not_ready=lambda: why[0],
                          metrics=Metrics()).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert get(f"{base}/readyz") == (503, "not ready: state store unavailable\n")
        assert get(f"{base}/healthz") == (200, "ok\n")
        why[0] = None
        assert get(f"{base}/readyz") == (200, "ready\n")
    finally:
        server.stop()
