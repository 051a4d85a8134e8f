"""The README and docs/ hold together: every link leads somewhere, and the environment table
lists exactly the variables the local gateway reads."""

from __future__ import annotations

import re
from pathlib import Path

from mxgate.local.settings import ENVIRONMENT, NAMED_PORTS
from tests.support import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Pages other issues are writing: linked from the README before they land. Once a page exists,
# its links and anchors are checked like any other.
PAGES_IN_PROGRESS: set[str] = set()
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def prose(page: Path) -> str:
    return FENCE.sub("", page.read_text(encoding="utf-8"))


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", prose(page), re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(prose(page)):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            relative = (
                resolved.relative_to(REPO).as_posix() if resolved.is_relative_to(REPO) else ""
            )
            if not resolved.exists():
                if relative not in PAGES_IN_PROGRESS:
                    broken.append(f"{page.relative_to(REPO)}: {target}: no such file")
                continue
            if anchor and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(REPO)}: {target}: no such heading")
    assert broken == []


def test_the_readme_links_every_docs_page():
    readme = prose(REPO / "README.md")
    linked = {target.partition("#")[0] for target in LINK.findall(readme)}
    pages = {f"docs/{page.name}" for page in (REPO / "docs").glob("*.md")}
    assert pages - linked == set()


def test_the_environment_table_lists_every_variable():
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    table = text[text.index("| variable |") :].split("\n\n")[0]
    listed = re.findall(r"^\| `(MXGATE_[A-Z_<>]+)`", table, re.MULTILINE)
    placeholders = {"mailbox_ports": "<HOST>", "ingress_ports": "<ID>"}
    named = [NAMED_PORTS[kind].format(placeholder) for kind, placeholder in placeholders.items()]
    assert sorted(listed) == sorted([*ENVIRONMENT, *named])
