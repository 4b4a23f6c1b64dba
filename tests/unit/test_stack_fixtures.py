"""The integration suite's tolerance for kafka-python's connect-time socket leak stays narrow."""

from __future__ import annotations

import warnings

import pytest
from _pytest.config import parse_warning_filter

from tests.integration.stacks import tolerate_kafka_connect_leak

pytestmark = pytest.mark.unit

# the repr CI printed when the leak failed a test
KAFKA = ("<socket.socket fd=20, family=2, type=1, proto=6, laddr=('127.0.0.1', 42000), "
         "raddr=('127.0.0.1', 19092)>")
KAFKA_V6 = ("<socket.socket fd=9, family=10, type=1, proto=6, laddr=('::1', 42000, 0, 0), "
            "raddr=('::1', 19094, 0, 0)>")
CONNECT = ("<socket.socket fd=21, family=2, type=1, proto=6, laddr=('127.0.0.1', 42002), "
           "raddr=('127.0.0.1', 18083)>")
UNCONNECTED = "<socket.socket fd=22, family=2, type=1, proto=6, laddr=('0.0.0.0', 0)>"


class Config:
    """Records the ini lines a fixture adds, as pytest.Config.addinivalue_line would."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def addinivalue_line(self, name: str, line: str) -> None:
        assert name == "filterwarnings"
        self.lines.append(line)


def raised(message: str, category: type[Warning], *, later_test: bool) -> bool:
    """Whether the warning still fails a test: the one running when the fixture tolerated the leak
    (its filters applied at once), or a later one (the ini lines, applied as pytest applies them)."""
    config = Config()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tolerate_kafka_connect_leak(config, [19092, 19094])  # type: ignore[arg-type]
        if later_test:
            warnings.resetwarnings()
            warnings.simplefilter("error")
            for line in config.lines:
                warnings.filterwarnings(*parse_warning_filter(line, escape=False))
        try:
            warnings.warn(category(message), stacklevel=1)
        except Warning:
            return True
        return False


@pytest.mark.parametrize("later_test", [False, True])
@pytest.mark.parametrize("sock", [KAFKA, KAFKA_V6])
def test_a_socket_left_connected_to_a_kafka_port_is_tolerated(sock, later_test):
    assert not raised(f"unclosed {sock}", ResourceWarning, later_test=later_test)
    assert not raised(f"Exception ignored in: {sock}", pytest.PytestUnraisableExceptionWarning,
                      later_test=later_test)


@pytest.mark.parametrize("later_test", [False, True])
@pytest.mark.parametrize("sock", [CONNECT, UNCONNECTED, KAFKA.replace("19092", "190920")])
def test_any_other_unclosed_socket_still_fails(sock, later_test):
    assert raised(f"unclosed {sock}", ResourceWarning, later_test=later_test)
    assert raised(f"Exception ignored in: {sock}", pytest.PytestUnraisableExceptionWarning,
                  later_test=later_test)


@pytest.mark.parametrize("later_test", [False, True])
def test_other_warnings_about_a_kafka_socket_still_fail(later_test):
    assert raised(f"unclosed {KAFKA}", DeprecationWarning, later_test=later_test)
