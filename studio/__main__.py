"""The `studio` command (and `python -m studio`): `studio.cli.main`, started so that a Ctrl-C while its modules
load (numpy, Pillow, PyYAML: before the command line can take it) ends it as one later does, without a traceback,
and ended without the interpreter's teardown once the command is done (`end`)."""

import os
import signal
import sys
from typing import NoReturn

from studio.errors import interrupt_in


def main() -> NoReturn:
    try:
        from studio.cli import main as run
    except (KeyboardInterrupt, ImportError) as e:
        if interrupt_in(e) is None:
            raise
        print("studio: interrupted", file=sys.stderr)
        end(130)
    end(run())


def end(code: int) -> NoReturn:
    """End the process with `code` once the command is done, its files written or removed and its last line said:
    without the teardown of MindSpore's C++ runtime, which took up to a second in which a Ctrl-C or SIGTERM had no
    handler (a traceback from an exit hook, or the signal's status in place of the command's) and which, after a
    signal stopped a kernel, could abort the process ('corrupted double-linked list', status 134)."""
    for stream in (sys.stdout, sys.stderr):  # before the signals are ignored: a stalled reader can still be left
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
