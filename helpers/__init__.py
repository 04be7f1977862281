"""flashsrv's helper processes (installed as the package `flashsrv_helpers`).

A helper does the blocking disk work of the AMPED design: path lookup, stat, open and reads of
file data that may not be in memory. It imports nothing heavy (no uvloop, no HTTP code) so that
it starts fast, and it knows nothing about HTTP: paths in, file facts and bytes out.

- `wire`: the framed message format spoken over the helper's socket pair.
- `diskops`: the blocking operations themselves (also called inline by the `sped` and
  `threads` concurrency models, so every model runs the same disk code).
- `worker`: the helper process's main loop.
"""
