import pytest
import yaml

from ecst.connectors.contexts import resolve
from ecst.exceptions import ConfigError

LOCAL = "http://127.0.0.1:18083"


@pytest.fixture
def contexts(tmp_path, monkeypatch):
    path = tmp_path / "contexts.yaml"
    path.write_text(yaml.safe_dump({"current": "dev", "contexts": {
        "dev": {"url": "http://dev:8083/"},
        "prod": {"url": "https://prod:8083", "username": "ops", "password": "${PROD_PW}"}}}))
    monkeypatch.setenv("ECST_CONTEXTS", str(path))
    monkeypatch.delenv("ECST_CONTEXT", raising=False)
    monkeypatch.delenv("ECST_CONNECT_PASSWORD", raising=False)
    return path


def test_order_of_precedence(contexts, monkeypatch):
    assert resolve("http://explicit:1", "prod", LOCAL).url == "http://explicit:1"
    assert resolve(None, None, LOCAL).url == "http://dev:8083"  # current
    monkeypatch.setenv("ECST_CONTEXT", "prod")
    monkeypatch.setenv("PROD_PW", "hunter2")
    ctx = resolve(None, None, LOCAL)
    assert (ctx.name, ctx.url, ctx.auth) == ("prod", "https://prod:8083", ("ops", "hunter2"))
    assert "hunter2" not in repr(ctx)


def test_without_a_file_the_local_stack_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("ECST_CONTEXTS", str(tmp_path / "none.yaml"))
    monkeypatch.delenv("ECST_CONTEXT", raising=False)
    assert resolve(None, None, LOCAL).url == LOCAL


def test_unknown_context_and_unset_password_are_clear_errors(contexts):
    with pytest.raises(ConfigError, match=r"no context 'qa' with a url \(known: dev, prod\)"):
        resolve(None, "qa", LOCAL)
    with pytest.raises(ConfigError, match="PROD_PW is not set"):
        resolve(None, "prod", LOCAL)
