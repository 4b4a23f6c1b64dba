"""deploy/monitoring/ecst-rules.yaml: promtool accepts it and its unit tests pass, and every alert has what
an operator needs (a severity, a summary, a description, a runbook section that exists).

promtool comes with Debian's `prometheus` package: `make check` installs it when it is missing (`make
promtool`); this test never installs it (that takes minutes) and fails, never skips, without it."""

import pytest
import yaml

from tests.unit.monitoring import files
from tests.unit.monitoring.files import (
    ROOT,
    RULE_TESTS,
    RULES,
    RUNBOOK,
    dashboard_expressions,
    promtool,
    rules,
)
from tests.unit.test_docs import anchors


def test_promtool_checks_the_rules():
    assert "SUCCESS" in promtool("check", "rules", str(RULES.relative_to(ROOT)))


def test_promtool_unit_tests_of_the_rules_pass():
    assert RULE_TESTS, "no unit test file under deploy/monitoring/tests/"
    assert "SUCCESS" in promtool("test", "rules", *(str(p.relative_to(ROOT)) for p in RULE_TESTS))


def test_every_alert_has_a_firing_and_a_quiet_case():
    cases: dict[str, set[bool]] = {}
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for check in test.get("alert_rule_test", []):
                cases.setdefault(check["alertname"], set()).add(bool(check.get("exp_alerts")))
    for rule in rules():
        assert cases.get(rule["alert"]) == {True, False}, (
            f"{rule['alert']}: deploy/monitoring/tests needs a case where it fires and one where it does not")


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_alert_says_how_bad_what_and_where_to_look(rule):
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert "for" in rule, f"{rule['alert']}: no `for:`, it would fire on a single evaluation"
    notes = rule["annotations"]
    assert notes["summary"] and notes["description"]
    page, _, anchor = notes["runbook_url"].partition("#")
    assert page == "docs/runbook.md", f"{rule['alert']}: runbook_url {notes['runbook_url']} is elsewhere"
    assert anchor in anchors(RUNBOOK), f"{rule['alert']}: docs/runbook.md has no section #{anchor}"


def test_without_promtool_the_test_fails_and_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(files.shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="make promtool"):
        promtool("--version")


def test_the_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses each panel query as a recording rule (Grafana's variables replaced by values)."""
    grafana = {"$__rate_interval": "5m", '"$job"': '"ecst"', '"$instance"': '".*"'}
    rules_ = []
    for i, (where, expr) in enumerate(sorted(dashboard_expressions().items())):
        for var, value in grafana.items():
            expr = expr.replace(var, value)
        assert "$" not in expr.replace('"$1"', ""), f"{where}: a Grafana variable this test does not know"
        rules_.append({"record": f"ecst:dashboard_query:{i}", "expr": expr})
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules_}]}))
    assert "SUCCESS" in promtool("check", "rules", str(path))
