"""The `studio` command (and `python -m studio`): `studio.cli.main`, started so that a Ctrl-C while its modules
load (numpy, Pillow, PyYAML: before the command line can take it) ends it as one later does, without a traceback."""

import sys

from studio.errors import interrupt_in


def main() -> int:
    try:
        from studio.cli import main as run
    except (KeyboardInterrupt, ImportError) as e:
        if interrupt_in(e) is None:
            raise
        print("studio: interrupted", file=sys.stderr)
        return 130
    return run()


if __name__ == "__main__":
    sys.exit(main())
