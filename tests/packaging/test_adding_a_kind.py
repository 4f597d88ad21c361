"""docs/adding-a-kind.md says which files a kind touches: every kind there is must have them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aigw_operator.registry import KINDS, Kind

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "adding-a-kind.md"
ROW = re.compile(r"^\| (\d+) \| `([^`]+)` \| ([^|]+) \| [^|]+ \|$", re.M)


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def placeholders(kind: Kind) -> dict[str, str]:
    return {
        "<module>": snake(kind.info.kind),
        "<Kind>": kind.info.kind,
        "<plural>": kind.info.plural,
        "<singular>": kind.info.singular,
        "<upstream>": kind.upstream,
        "<upstreamValues>": camel(kind.upstream),
    }


def rows() -> list[tuple[int, str, str]]:
    return [(int(number), path, how.strip()) for number, path, how in ROW.findall(DOC.read_text())]


def test_the_table_is_numbered_and_counted_as_the_text_says() -> None:
    table = rows()
    assert [number for number, _, _ in table] == list(range(1, len(table) + 1))
    text = DOC.read_text()
    assert f"touches all\n{len(table)}" in text or f"touches all {len(table)}" in text
    on_known_upstream = [row for row in table if "new upstream only" not in row[2]]
    assert f"touches {len(on_known_upstream)} files" in text


@pytest.mark.parametrize("kind", KINDS, ids=lambda kind: kind.info.kind)
def test_every_kind_has_the_files_the_doc_lists(kind: Kind) -> None:
    """A new file exists under its name; an entry names the kind (or its upstream) in its file."""
    values = placeholders(kind)
    for number, template, how in rows():
        path = template
        for placeholder, value in values.items():
            path = path.replace(placeholder, value)
        assert "<" not in path, f"row {number}: unknown placeholder in {template}"
        file = REPO / path
        assert file.is_file(), f"row {number}: {path} is missing for {kind.info.kind}"
        if template != path:
            continue
        # A shared file: the kind's entry (or, for an upstream's entry, the upstream's) is in it.
        text = file.read_text()
        if "new upstream only" in how:
            names = [f'"{values["<upstream>"]}"', f'"{values["<upstreamValues>"]}"']
        else:
            names = [kind.info.kind, f"{values['<module>']}."]
        assert any(name in text for name in names), f"row {number}: {path} has no entry for {kind.info.kind}"
