"""The metric names a PromQL expression reads: a small tokenizer, conservative by design.

It knows PromQL's functions, aggregations and keywords; anything else in expression position is a
metric name. Label matchers (`{...}`), range and subquery brackets (`[...]`), the label lists of
`by`/`without`/`on`/`ignoring`/`group_left`/`group_right`, strings, numbers, durations and Grafana
variables (`$instance`, `${DS}`, `$__rate_interval`) are skipped. An unknown identifier followed by `(`
is an error rather than a guess."""

from __future__ import annotations

import re

FUNCTIONS = frozenset("""
abs absent absent_over_time acos acosh asin asinh atan atanh avg_over_time ceil changes clamp clamp_max
clamp_min cos cosh count_over_time day_of_month day_of_week day_of_year days_in_month deg delta deriv exp
floor histogram_avg histogram_count histogram_fraction histogram_quantile histogram_stddev histogram_stdvar
histogram_sum holt_winters double_exponential_smoothing hour idelta increase irate label_join label_replace
last_over_time ln log10 log2 mad_over_time max_over_time min_over_time minute month pi predict_linear
present_over_time quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label
sort_by_label_desc sort_desc sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp
vector year
""".split())
AGGREGATIONS = frozenset("""
sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
""".split())
LABEL_LISTS = frozenset("by without on ignoring group_left group_right".split())
KEYWORDS = frozenset("and or unless bool offset atan2 inf nan".split()) | LABEL_LISTS

_TOKEN = re.compile(r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$\w+)
  | (?P<duration>(?:\d+(?:ms|s|m|h|d|w|y))+(?![\w.]))
  | (?P<number>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>==|!=|=~|!~|>=|<=|[-+*/%^<>=,(){}\[\]@:])
""", re.X)


class PromQLError(ValueError):
    """The expression has a character or a function this tokenizer does not know."""


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) pairs of `expr`, without whitespace and comments."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise PromQLError(f"cannot read {expr[pos:pos + 20]!r} in {expr!r}")
        kind = m.lastgroup or ""
        if kind != "space":
            out.append((kind, m.group()))
        pos = m.end()
    return out


def _skip_group(toks: list[tuple[str, str]], i: int, close: str) -> int:
    """The index after the bracket that closes the one at `i`."""
    opener = toks[i][1]
    depth = 0
    for j in range(i, len(toks)):
        if toks[j][1] == opener:
            depth += 1
        elif toks[j][1] == close:
            depth -= 1
            if depth == 0:
                return j + 1
    raise PromQLError(f"unclosed {opener!r}")


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects, including those named by `{__name__="..."}`."""
    toks = tokens(expr)
    for opener, close in ("()", "{}", "[]"):
        if sum(t == opener for _, t in toks) != sum(t == close for _, t in toks):
            raise PromQLError(f"unbalanced {opener}{close} in {expr!r}")
    names: set[str] = set()
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if text == "{":
            end = _skip_group(toks, i, "}")
            body = toks[i + 1:end - 1]
            for k in range(len(body) - 2):
                if body[k][1] == "__name__" and body[k + 1][1] == "=" and body[k + 2][0] == "string":
                    names.add(body[k + 2][1][1:-1])
            i = end
        elif text == "[":
            i = _skip_group(toks, i, "]")
        elif kind == "ident" and text in LABEL_LISTS:
            i = _skip_group(toks, i + 1, ")") if nxt == "(" else i + 1
        elif kind == "ident" and text == "offset":
            i += 2
        elif kind == "ident" and nxt == "(":
            if text not in FUNCTIONS and text not in AGGREGATIONS:
                raise PromQLError(f"unknown function {text!r} in {expr!r}")
            i += 1
        elif kind == "ident" and text.lower() not in KEYWORDS and text not in AGGREGATIONS:
            names.add(text)
            i += 1
        else:
            i += 1
    return names
