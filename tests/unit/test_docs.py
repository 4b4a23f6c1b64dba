"""The README and the documentation site (mkdocs.yml, docs/): what they promise, and that they hold together.

Cheap checks, no mkdocs needed; `make docs` builds the site with `mkdocs build --strict`."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README_LIMIT = 10_000  # characters: the pitch, the two commands and the layout; the rest is in docs/
PAGES = sorted(DOCS.glob("*.md"))
LINKED = [ROOT / "README.md", ROOT / "connectors" / "README.md", ROOT / "consumer" / "README.md", *PAGES]
_FENCE = re.compile(r"^ *```.*?^ *```", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^#{1,6} +(.+?) *#*$", re.M)


def links(path: Path) -> list[str]:
    """The targets of the inline links of a Markdown file, outside code."""
    text = _CODE.sub("", _FENCE.sub("", path.read_text()))
    return _LINK.findall(text)


def anchors(path: Path) -> set[str]:
    """The ids of a page's headings, as Python-Markdown's toc (and GitHub, for plain headings) make them."""
    text = _FENCE.sub("", path.read_text())
    ids = set()
    for title in _HEADING.findall(text):
        title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title).replace("`", "").replace("*", "")
        slug = re.sub(r"[^\w\s-]", "", title.lower()).strip()
        ids.add(re.sub(r"[-\s]+", "-", slug))
    return ids


def test_the_readme_stays_short():
    size = len((ROOT / "README.md").read_text())
    assert size < README_LIMIT, f"README.md has {size:,} characters: move reference text into docs/"


@pytest.mark.parametrize("page", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(page):
    for target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # a URL
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
        if page.parent == DOCS:  # the site is built from docs/ alone
            assert DOCS in resolved.parents or resolved == DOCS, (
                f"{page.relative_to(ROOT)} links to {target}, outside docs/: the site cannot resolve it")
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{page.relative_to(ROOT)} links to {target}: no such heading"


def test_every_page_is_in_the_site_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [p.name for p in PAGES if not re.search(rf":\s*{re.escape(p.name)}\s*$", nav, re.M)]
    assert not missing, f"docs pages not in mkdocs.yml's nav: {missing}"


def test_the_security_page_says_what_replication_lets_the_connector_role_read():
    """Postgres semantics: SELECT grants limit the snapshot; a REPLICATION role can create a
    logical slot of its own and decode every table's changes (and stream the whole cluster)."""
    page = (DOCS / "security.md").read_text()
    start = page.index("- The connector uses a dedicated role")
    end = min(i for i in (page.find("\n- ", start + 1), page.find("\n\n", start), len(page)) if i != -1)
    bullet = page[start:end]
    assert "captured table only" not in bullet
    for fact in ("replication slot of its own", "every table", "pg_basebackup", "pg_hba.conf"):
        assert fact in bullet, f"docs/security.md's least-privilege bullet does not say: {fact}"
