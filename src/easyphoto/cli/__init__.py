"""The ``easyphoto`` command line: one module per command group, each registering with ``@app.command``.

Every command parses its options, calls one workflow (:mod:`easyphoto.workflows`) or library function,
and renders the result; a user mistake prints one line naming the input and the reason and exits 2
(``--debug`` shows the traceback). Heavy libraries (torch, diffusers, gradio) are imported inside the
commands that need them, so ``easyphoto --help`` stays fast.
"""

from __future__ import annotations

from . import faces, generate, models, prepare, serve, swap, tiny_model, train, worker  # noqa: F401  (registers the commands)
from .app import EXIT_BAD_INPUT, app, fail, main

__all__ = ["EXIT_BAD_INPUT", "app", "fail", "main"]
