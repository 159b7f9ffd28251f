"""The `studio` command (and `python -m studio`): `studio.cli.main`, started so that a Ctrl-C or SIGTERM while its
modules load (numpy, Pillow, PyYAML: before the command line can take them) ends it as one later does, without a
traceback, and ended without the interpreter's teardown once the command is done (`end`). Importing this module
starts the command: the signals are only noted from here until `main` has loaded the CLI."""

import signal

# First, before any other import: a signal while studio's modules load is noted, not raised there (a traceback, or
# an ImportError that hides it when it lands in a C extension's start-up, as numpy's import of datetime)
_noted: list[int] = []
_before = {s: signal.signal(s, lambda signum, frame: _noted.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}

import os  # noqa: E402
import sys  # noqa: E402
from typing import NoReturn  # noqa: E402

SAID = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}  # as the CLI says them


def main() -> NoReturn:
    try:
        from studio.cli import main as run
    finally:
        for s, handler in _before.items():  # the CLI sets its own (SIGTERM) or holds them (MindSpore's import)
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: a handler set outside Python
    noted = [s for s in _noted if _before[s] is not signal.SIG_IGN]  # not one the caller ignores (nohup)
    if noted:
        print(f"studio: {SAID[noted[0]]}", file=sys.stderr)
        end(128 + noted[0])
    end(run())


def end(code: int) -> NoReturn:
    """End the process with `code` once the command is done, its files written or removed and its last line said:
    without the teardown of MindSpore's C++ runtime, which took up to a second in which a Ctrl-C or SIGTERM had no
    handler (a traceback from an exit hook, or the signal's status in place of the command's) and which, after a
    signal stopped a kernel, could abort the process ('corrupted double-linked list', status 134)."""
    for stream in (sys.stdout, sys.stderr):  # before the signals are ignored: a stalled reader can still be left
        if stream is None:  # started without it (`studio ... >&-`)
            continue
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader gone (`studio plan --json | head`), a stream closed
            pass
        except KeyboardInterrupt:
            code = 130
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os._exit(code)


if __name__ == "__main__":
    main()
