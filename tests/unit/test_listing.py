"""flashsrv.listing: directory listing rows and the page around them."""

from __future__ import annotations

from flashsrv.httpdate import format_http_date
from flashsrv.listing import listing_page, listing_rows

T = 784111777


def names(rows: list[str]) -> list[str]:
    return [r.split('">', 1)[1].split("</a>", 1)[0] for r in rows]


def test_dot_files_are_never_listed():
    rows = list(listing_rows("/", [(".env", False, 1, T), (".git", True, 0, T),
                                   ("a.txt", False, 1, T)]))
    assert names(rows) == ["a.txt"]
    assert not any(".env" in r or ".git" in r for r in rows)


def test_directories_first_then_case_insensitive_name_order():
    entries = [("b.txt", False, 1, T), ("Zeta", True, 0, T), ("A.txt", False, 1, T),
               ("alpha", True, 0, T), ("c.txt", False, 1, T)]
    assert names(list(listing_rows("/", entries))) == [
        "alpha/", "Zeta/", "A.txt", "b.txt", "c.txt"]


def test_root_has_no_parent_link_and_subdirectories_do():
    assert list(listing_rows("/", [])) == []
    rows = list(listing_rows("/docs/", [("x", False, 1, T)]))
    assert rows[0] == '<tr><td><a href="../">../</a></td><td></td><td></td></tr>'
    assert names(rows) == ["../", "x"]


def test_names_are_escaped_and_links_percent_encoded():
    [row] = listing_rows("/", [('<b>&"x y#?.txt', False, 3, T)])
    assert '<a href="%3Cb%3E%26%22x%20y%23%3F.txt">&lt;b&gt;&amp;&quot;x y#?.txt</a>' in row
    assert "<b>" not in row


def test_non_ascii_names_are_utf8_percent_encoded():
    [row] = listing_rows("/", [("café", True, 0, T)])
    assert 'href="caf%C3%A9/"' in row and ">café/</a>" in row


def test_sizes_and_dates():
    rows = list(listing_rows("/", [("d", True, 4096, T), ("small", False, 512, T),
                                   ("mid", False, 1536, T), ("big", False, 5 << 30, T)]))
    assert "<td>-</td>" in rows[0]
    by_name = dict(zip(names(rows), rows, strict=True))
    assert "<td>512 B</td>" in by_name["small"]
    assert "<td>1.5 KiB</td>" in by_name["mid"]
    assert "<td>5.0 GiB</td>" in by_name["big"]
    assert f"<td>{format_http_date(T)}</td>" in by_name["small"]


def test_rows_are_produced_lazily():
    rows = listing_rows("/", [("a", False, 1, T)])
    assert iter(rows) is rows
    assert next(rows).startswith("<tr>")


def test_page_wraps_rows_in_a_table_with_escaped_title():
    page = listing_page("/a&<b>/", ["<tr><td>R1</td></tr>", "<tr><td>R2</td></tr>"])
    assert isinstance(page, bytes)
    text = page.decode()
    assert text.startswith("<!doctype html>") and text.endswith("</table></body></html>\n")
    assert "<title>Index of /a&amp;&lt;b&gt;/</title>" in text
    assert "<h1>Index of /a&amp;&lt;b&gt;/</h1>" in text
    assert "<tr><th>Name</th><th>Size</th><th>Modified</th></tr>" in text
    assert text.index("R1") < text.index("R2") < text.index("</table>")


def test_page_is_utf8():
    page = listing_page("/café/", [])
    assert "café".encode() in page and b'<meta charset="utf-8">' in page
