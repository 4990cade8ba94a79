"""Walking the options at the head of a command line, as getopt-like programs read them.

Options come first; ``--`` ends them (and is not an operand); so does the first
word that is not an option (it is). Perl's command line
(:mod:`cachefs.closure.perlargs`) and ``beonode step``'s
(:mod:`launcher.node.tasks.enter_step`) are read this way; what an option
word means stays with each reader.

``beonode step``'s fast form imports this under ``python -I -S`` at every step
start, so it imports nothing (not even typing: mypy reads the names below).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence


class LeadingOptions:
    """The option words at the head of ``args``, one at a time.

    Iterating yields each word up to ``--`` (taken, and the walk ends) or up to
    the first word ``is_option`` refuses (left for :meth:`operands`). An
    option that takes the next word as its value calls :meth:`value`.
    """

    __slots__ = ("_args", "_is_option", "_next")

    def __init__(self, args: Sequence[str], is_option: Callable[[str], bool]) -> None:
        self._args = args
        self._is_option = is_option
        self._next = 0

    def __iter__(self) -> Iterator[str]:
        while self._next < len(self._args):
            arg = self._args[self._next]
            if arg == "--":
                self._next += 1
                return
            if not self._is_option(arg):
                return
            self._next += 1
            yield arg

    def value(self) -> str | None:
        """The word after the current option, taken as its value; None when
        the command line ends there."""
        if self._next >= len(self._args):
            return None
        self._next += 1
        return self._args[self._next - 1]

    def operands(self) -> list[str]:
        """The words after the options (all of them once the walk has ended)."""
        return list(self._args[self._next :])
