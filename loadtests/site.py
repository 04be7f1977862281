"""A small but realistic demo static site for the locust load tests.

The load tests need a site whose shape they know (pages, the assets each page references, a
video-like file to seek in) and whose bytes they can verify, so everything here is generated
deterministically: the same call always writes the same bytes, and `video_bytes()` lets a
client check a Range response byte for byte without downloading the whole file.

Usage: `python loadtests/site.py DIR` writes the site into DIR (created if missing).

This file is loaded by path (importlib) rather than imported as `site`, which would be the
standard library's module of that name.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

VIDEO_PATH = "/media/intro.mp4"
VIDEO_SIZE = 6 * 1024 * 1024 + 12_345  # a few MiB and deliberately not a round number

PAGES = ["/", "/about.html", "/blog/", "/blog/first-post.html", "/blog/second-post.html"]
MISSING = ["/old-page.html", "/img/missing.png", "/wp-login.php", "/blog/2019/", "/favicon.png"]

_CSS = """:root { --fg: #1d1d1f; --bg: #fbfbfd; --accent: #0a66c2; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.6 "Body", system-ui, sans-serif; color: var(--fg);
       background: var(--bg); }
header, main, footer { max-width: 60rem; margin: 0 auto; padding: 1rem; }
nav a { margin-right: 1rem; color: var(--accent); text-decoration: none; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(12rem, 1fr)); gap: 1rem; }
.grid img { width: 100%; border-radius: .5rem; }
"""

_JS = """"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const img of document.querySelectorAll(".grid img")) {
    img.addEventListener("click", () => img.classList.toggle("zoomed"));
  }
});
"""

_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
    '<circle cx="32" cy="32" r="30" fill="#0a66c2"/>'
    '<path d="M20 40 L32 16 L44 40 Z" fill="#fff"/></svg>\n'
)


def _blob(name: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes (incompressible, like real images and video)."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return random.Random(seed).randbytes(size)


def video_bytes() -> bytes:
    """The exact content of the video file, for verifying Range responses."""
    return _blob(VIDEO_PATH, VIDEO_SIZE)


def _page(title: str, body: str, depth: int) -> str:
    up = "../" * depth
    thumbs = "\n".join(
        f'      <img src="{up}img/thumb-{i}.jpg" alt="thumbnail {i}">' for i in range(1, 7)
    )
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title} - Demo</title>
  <link rel="stylesheet" href="{up}css/site.css">
  <link rel="icon" href="{up}img/logo.svg">
  <link rel="preload" href="{up}fonts/body.woff2" as="font" type="font/woff2" crossorigin>
  <script src="{up}js/app.js" defer></script>
</head>
<body>
  <header><img src="{up}img/logo.svg" alt="logo" width="32">
    <nav><a href="{up}index.html">Home</a><a href="{up}about.html">About</a>
      <a href="{up}blog/">Blog</a></nav></header>
  <main>
    <h1>{title}</h1>
    <img src="{up}img/hero.jpg" alt="hero image">
    <p>{body}</p>
    <div class="grid">
{thumbs}
    </div>
    <video src="{up}media/intro.mp4" controls preload="none"></video>
  </main>
  <footer>Served by flashsrv.</footer>
</body>
</html>
"""


def write_site(root: Path | str) -> Path:
    """Write the demo site into `root` and return it; idempotent."""
    root = Path(root)
    text = {
        "index.html": _page("Home", "Welcome to the demo site. " * 20, 0),
        "about.html": _page("About", "About this site. " * 40, 0),
        "blog/index.html": _page("Blog", "All posts. " * 10, 1),
        "blog/first-post.html": _page("First post", "Lorem ipsum dolor sit amet. " * 120, 1),
        "blog/second-post.html": _page("Second post", "Consectetur adipiscing. " * 80, 1),
        "css/site.css": _CSS,
        "js/app.js": _JS,
        "img/logo.svg": _SVG,
    }
    binary = {
        "img/hero.jpg": _blob("hero", 180_000),
        "fonts/body.woff2": _blob("font", 42_000),
        **{f"img/thumb-{i}.jpg": _blob(f"thumb-{i}", 12_000 + 3_000 * i) for i in range(1, 7)},
        VIDEO_PATH.lstrip("/"): video_bytes(),
    }
    for rel, content in {**text, **binary}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        if not path.exists() or path.read_bytes() != data:
            path.write_bytes(data)
    return root


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python loadtests/site.py DIR", file=sys.stderr)
        return 2
    root = write_site(argv[0])
    print(f"demo site written to {root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
