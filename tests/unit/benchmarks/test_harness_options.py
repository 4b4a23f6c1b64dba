"""The harness's command line: sizes and their overrides (no stack)."""

import pytest

from benchmarks import harness

pytestmark = pytest.mark.unit


def test_the_latency_rates_can_be_narrowed_to_one_goal():
    argv = ["--only", "latency", "--rates", "1000,3000", "--out", "/tmp/x"]
    sizes, only, out, quick = harness.options(argv)
    assert sizes.rates == (1000, 3000) and sizes.seconds == harness.FULL.seconds
    assert only == ["latency"] and str(out) == "/tmp/x" and not quick


def test_quick_keeps_its_own_sizes_unless_overridden():
    sizes, _, out, quick = harness.options(["--quick", "--seconds", "5"])
    assert quick and sizes.rates == harness.QUICK.rates and sizes.seconds == 5 and out.name == "quick"


@pytest.mark.parametrize("argv, says", [
    (["--rates", "1000,fast"], "--rates '1000,fast'"),
    (["--rates", "0"], "--rates '0'"),
    (["--repeats", "2"], "--repeats must be 3 or more"),
    (["--only", "apply,speed"], "unknown scenario(s) speed"),
])
def test_a_wrong_option_exits_2_naming_it(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        harness.options(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err
