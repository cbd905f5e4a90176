"""The documentation a newcomer reads: a short README whose links resolve, the license pyproject declares, a
citation file for slukd and both papers."""

from __future__ import annotations

import re

from ruamel.yaml import YAML

from tests.conftest import REPO

#: pages linked before they exist (written in parallel by other issues); drop an entry once its page is merged
PENDING = {"docs/extending.md", "docs/reproducing.md"}


def test_readme_is_short_and_names_the_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    for cmd in ("make demo", "make test", "make tiny"):
        assert cmd in text, cmd


def test_every_relative_link_resolves():
    missing = []
    for page in [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            path = (page.parent / target).resolve()
            if not path.exists():
                missing.append(str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path))
    assert set(missing) <= PENDING, sorted(set(missing) - PENDING)


def test_license_and_citation():
    assert "Apache License" in (REPO / "LICENSE").read_text(encoding="utf-8")
    assert 'license = { text = "Apache-2.0" }' in (REPO / "pyproject.toml").read_text(encoding="utf-8")
    cff = YAML(typ="safe").load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "Apache-2.0"
    titles = " ".join(r["title"] for r in cff["references"])
    assert "Class-Incremental End-to-End Spoken Language Understanding" in titles
    assert "Encoder-Level Knowledge Distillation" in titles


def _table(text: str, marker: str) -> dict[str, dict[str, str]]:
    """{method: {column: cell}} of the first markdown table between ``<!-- marker:begin/end -->``."""
    block = text[text.index(f"<!-- {marker}:begin -->") : text.index(f"<!-- {marker}:end -->")]
    lines = [ln for ln in block.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {}
    for ln in lines[2:]:
        if ln.startswith("|---") or ln.startswith("| method"):
            break  # the next table of the block
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells))
    return rows


def test_readme_headline_tables_are_cells_of_the_published_tables():
    """The README's tables are selected rows and columns of the results pages, numbers unchanged."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for marker, page, full_marker in (
        ("README_SLU", "docs/results_slu.md", "SLU3TABLE"),
        ("README_CAP", "docs/results_captioning.md", "CAPTABLE"),
    ):
        short = _table(readme, marker)
        full = _table((REPO / page).read_text(encoding="utf-8"), full_marker)
        assert short, marker
        for method, cells in short.items():
            assert method in full, (marker, method)
            for col, cell in cells.items():
                assert full[method].get(col) == cell, (marker, method, col, cell, full[method].get(col))
