"""The `dispatch` process itself (the console script and `python -m dispatch`):
what happens before the command line is read and after the command ends.

Start-up imports make well over 100,000 objects that live as long as the
process. Python's cyclic collector, at its default thresholds, walks them
again and again while they are made (some 200 collections before `dispatch
run` sends anything) and then, several times over, while the interpreter
exits: a third of the CPU time of an idle `run --once` (user 0.95 s against
0.61 s without; the walk is memory-bound, so instruction counts show less
of it: Py_FinalizeEx alone was 243 × 10⁶ instructions, 27 × 10⁶ now). So
the collector is off while the command's modules load, and those objects
are then moved out of its way (``gc.freeze``): later collections walk only
what the command itself makes, and at exit nothing of start-up is walked.
Only a real process does this: tests that run commands in-process
(typer's CliRunner) keep their collector as it is.

A frozen object is never collected, only freed when nothing refers to it:
garbage in reference cycles left at exit is not finalised. So what must
end in order ends in order before that: the engines' connections are closed
when the command ends (``AppContext.close``), `dispatch run` joins its
threads and helper processes itself, and the log handlers are flushed at
exit as always (logging's own atexit hook runs).

Pydantic looks for plugins when it builds its first validator: it imports
importlib.metadata and reads the entry points of every installed
distribution (some 10 ms of every start). Dispatch uses none, so the
process says so through pydantic's own switch, PYDANTIC_DISABLE_PLUGINS,
unless the environment already sets it (an empty value there turns plugin
loading back on, a comma-separated list disables only those plugins).
"""

from __future__ import annotations

import gc
import os

_paused = False


def main() -> None:
    global _paused
    gc.disable()
    _paused = True
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from dispatch.cli import app

    try:
        app(prog_name="dispatch")
    finally:
        resume_collector()  # --help and errors before the command's callback
        gc.freeze()


def resume_collector() -> None:
    """The command's modules are loaded (the root callback runs): collect
    again, leaving what start-up made out of every later collection."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
