"""flashsrv.watches: the directories a served file depends on."""

from __future__ import annotations

from itertools import pairwise

import pytest

from flashsrv.watches import ancestors


@pytest.mark.parametrize(("relpath", "dirs"), [
    ("index.html", [""]),
    ("", [""]),
    ("a/index.html", ["", "a"]),
    ("a/b/c/file.css", ["", "a", "a/b", "a/b/c"]),
    ("docs/index.html", ["", "docs"]),
])
def test_ancestors_root_first_then_each_directory(relpath: str, dirs: list[str]):
    assert ancestors(relpath) == dirs


def test_the_file_itself_is_not_an_ancestor():
    assert "a/b.txt" not in ancestors("a/b.txt")


def test_each_ancestor_is_a_prefix_of_the_next():
    dirs = ancestors("x/y/z/w.txt")
    for parent, child in pairwise(dirs[1:]):
        assert child.startswith(parent + "/")
