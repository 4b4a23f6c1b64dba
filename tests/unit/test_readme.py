"""What the README promises about privileges, kept true to Postgres' semantics."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_says_what_replication_lets_the_connector_role_read():
    """Postgres semantics: SELECT grants limit the snapshot; a REPLICATION role can create a
    logical slot of its own and decode every table's changes (and stream the whole cluster)."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("- The connector uses a dedicated role")
    bullet = readme[start:readme.index("\n- ", start + 1)]
    assert "captured table only" not in bullet
    for fact in ("replication slot of its own", "every table", "pg_basebackup", "pg_hba.conf"):
        assert fact in bullet, f"README's least-privilege bullet does not say: {fact}"
