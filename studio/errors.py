"""studio's exceptions: one small tree, each message a single line naming the bad value; the checks that
keep a message on one line; and interrupts (Ctrl-C, SIGTERM) held back or found."""

import contextlib
import inspect
import re
import signal
import threading

CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# Line breaks to YAML 1.1 (PyYAML) but text to YAML 1.2 (editors, the schema): NEL, LINE and PARAGRAPH SEPARATOR
YAML11_BREAKS = "\x85\u2028\u2029"
_BREAKING_RE = re.compile(rf"[\x00-\x1f\x7f{YAML11_BREAKS}]")  # what would break a message's line


class StudioError(Exception):
    """Base of every error studio raises for bad input; the CLI prints it in one line."""


class CheckpointError(StudioError):
    """A model folder or weight file is missing, malformed, or does not match the model. `model`: the model (a
    folder or hub id, as given) whose resolving failed, its message starting with its name; else None."""

    model: str | None = None


class ConfigError(StudioError):
    """A config.json / scheduler_config.json holds an unknown key or an impossible value."""


class InputError(StudioError, ValueError):
    """An argument to the pipeline or the CLI is out of range or of the wrong kind (a ValueError, as the
    reference raises for bad arguments)."""


class PlanError(StudioError, ValueError):
    """A request cannot be planned within its limits (memory budget, sizes): a ValueError, as a bad argument.
    `minimum`: when the memory budget is what falls short, the smallest budget that works, in bytes; else None."""

    def __init__(self, message: str, minimum: int | None = None):
        super().__init__(message)
        self.minimum = minimum


class NumericalError(StudioError, ArithmeticError):
    """A computation overflowed: its result holds NaN or infinite values, so there is nothing to return (the
    reference returns black images)."""


OUT_OF_MEMORY = "out of memory: MindSpore could not allocate a tensor; set a smaller memory budget"  # `out_of_memory`


def check_flag(name: str, value, none: str | None = None) -> None:
    """InputError unless `value` is True or False (numpy's too), or None when `none` says what None means: a
    truthy "no" would be read as True."""
    import numpy as np  # loaded by every caller already; not by the command line's start-up

    if not (isinstance(value, (bool, np.bool_)) or none is not None and value is None):
        allowed = "True or False" if none is None else f"None ({none}), True or False"
        raise InputError(f"{name} must be {allowed}, got {value!r:.80}")


def out_of_memory(e: BaseException) -> bool:
    """Whether e is MindSpore failing to allocate device or host memory (a RuntimeError with its C++ trace)."""
    return any(m in str(e) for m in ("Allocate memory failed", "MallocForOutputs", "Out of memory"))


class LayoutError(StudioError):
    """A layout file has problems: `errors` holds one line each, `file:line: key.path: what is wrong`."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


def one_line(text: str) -> str:
    """`text` with what would break its line (controls, YAML11_BREAKS) escaped: 'a\\nb' for a newline."""
    return _BREAKING_RE.sub(lambda m: repr(m[0])[1:-1], text)


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first line of `e`'s message, stripped and cut to `limit` characters, on one line (`one_line`); the
    name of its type when it has none. For a third-party error inside one of studio's."""
    lines = str(e).strip().splitlines()
    return one_line(lines[0].strip()[:limit]) if lines else type(e).__name__


def headline(e) -> str:
    """The first line of `e`'s message (an error or its text), with '(and N more)' for the lines after it: an
    error that reports several problems at once, said in one line; the type's name when it says nothing."""
    lines = str(e).splitlines()
    return lines[0] + (f" (and {len(lines) - 1} more)" if len(lines) > 1 else "") if lines else type(e).__name__


def refuses(function, *arguments) -> bool:
    """Whether `function` cannot be called with `arguments`: not callable, or of another signature (a user's
    callback, checked before any work). A callable whose signature can't be read is taken."""
    try:
        inspect.signature(function).bind(*arguments)
    except TypeError:
        return True
    except ValueError:
        pass
    return False


def control_problem(name: str) -> str | None:
    """'has a control character, ...' when `name`, a path or a font's or model's name, holds one (the system takes
    no NUL in a path), else None."""
    return "has a control character, which no path, font or model name may hold" if CONTROL_RE.search(name) else None


def interrupt_in(e: BaseException | None) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt `e` is or was raised from: a signal in the middle of a C extension's start-up makes
    its import fail with ImportError('initialization failed') from the interrupt; else None."""
    while e is not None and not isinstance(e, KeyboardInterrupt):
        e = e.__cause__ or e.__context__
    return e


@contextlib.contextmanager
def signals_held():
    """SIGINT and SIGTERM held back while the block runs, then delivered to their handlers (a KeyboardInterrupt,
    Terminated, a batch's "stop after this item"), so that a signal can't cut the block short: a C extension's
    start-up, a cleanup, renames that must all happen or none. Held by handlers that only note the signal (Python
    runs handlers in the main thread, between bytecodes), not by a thread's signal mask, which threads started
    already (numpy's) don't share; in another thread nothing is held, and no KeyboardInterrupt arrives there
    either. Gives the list of the signals held back so far."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    held = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, handler in held.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: a handler set outside Python
        for s in dict.fromkeys(received):
            signal.raise_signal(s)  # to the handler held back
