"""Shell command lines and the programs a shell script runs, found in its text.

Best effort, never an error: the text is tokenised (:mod:`shlex`, with
``;&|()<>`` and newlines as punctuation) after joining continued lines and
dropping comments and here-document bodies; a word in command position (the
start of a line or after ``; & | && || ( ) ` $(``, after ``if then else elif
do while until ! {``, after assignments ``VAR=x`` and after ``exec``,
``command``, ``time``, ``env``, ``nohup``, ``nice``, ``timeout``, ``xargs``,
``stdbuf`` and their options) is a command unless it is a builtin, a keyword,
a function the text defines, or holds an expansion (``$``, a glob, ``~``).
Each command is also given with its arguments (``calls``: an interpreter's
script or code is read from them). ``. FILE`` and ``source FILE`` name files
to read as shell too. ``$(...)`` and backquotes inside double quotes are
scanned on their own. Not understood: ``eval`` strings, aliases, commands in
variables, case patterns written as ``a|b)`` (their first word is looked up,
harmlessly).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

_PUNCTUATION = ";&|()<>\n`"
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=")
_HEREDOC = re.compile(r"(?<!<)<<(-?)\s*(['\"]?)([A-Za-z0-9_.-]+)\2")
_SUBSTITUTION = re.compile(r"\$\((?!\()([^()]*)\)|`([^`]*)`")
#: Nesting of $(...) scanned on its own.
MAX_NESTING = 4

_KEEP_POSITION = frozenset({"if", "then", "else", "elif", "do", "while", "until", "!", "{"})
_END_KEYWORDS = frozenset({"fi", "done", "esac", "}", "in", "]]"})
# Builtins of dash and bash (and their keywords that look like commands).
_BUILTINS = frozenset(
    {
        ":", ".", "[", "[[", "alias", "bg", "bind", "break", "builtin", "caller", "cd",
        "command", "compgen", "complete", "compopt", "continue", "declare", "dirs", "disown",
        "echo", "enable", "eval", "exec", "exit", "export", "false", "fc", "fg", "getopts",
        "hash", "help", "history", "jobs", "kill", "let", "local", "logout", "mapfile", "popd",
        "printf", "pushd", "pwd", "read", "readarray", "readonly", "return", "set", "shift",
        "shopt", "source", "suspend", "test", "times", "trap", "true", "type", "typeset",
        "ulimit", "umask", "unalias", "unset", "wait",
    }
)  # fmt: skip
# Words after which the next command word is a command too: options taking an
# argument, and how many operands come before the command (timeout's duration).
_WRAPPERS: dict[str, tuple[frozenset[str], int]] = {
    "exec": (frozenset({"-a"}), 0),
    "command": (frozenset(), 0),
    "builtin": (frozenset(), 0),
    "time": (frozenset(), 0),
    "env": (frozenset({"-u", "-C", "-S", "--unset", "--chdir", "--split-string"}), 0),
    "nohup": (frozenset(), 0),
    "nice": (frozenset({"-n", "--adjustment"}), 0),
    "timeout": (frozenset({"-s", "-k", "--signal", "--kill-after"}), 1),
    "xargs": (frozenset({"-I", "-n", "-P", "-d", "-E", "-L", "-s", "-a"}), 0),
    "stdbuf": (frozenset({"-i", "-o", "-e"}), 0),
}
_NOT_A_NAME = re.compile(r"[$`*?\[\]{}~=\\\"']")


@dataclass(frozen=True)
class ShellCommand:
    """What ``sh ARGS`` runs: a ``script`` (as given), ``code`` (``-c``), or
    neither (stdin, ``-s``, or an interactive shell)."""

    script: str | None
    code: str | None


@dataclass
class ShellWords:
    """The command words of a text (in order, once each), each command with its
    arguments as written, quotes removed (``calls``, once each), and the files
    it sources."""

    commands: list[str] = field(default_factory=list)
    calls: list[tuple[str, ...]] = field(default_factory=list)
    sourced: list[str] = field(default_factory=list)


def parse_shell(args: Sequence[str]) -> ShellCommand:
    """Read ``args`` (after the shell's name) as dash and bash do: option
    clusters (``-ec``, ``+x``), ``-o``/``-O``/``+o`` taking the next word, bash's
    long options (``--rcfile``/``--init-file`` take one), ``--`` or ``-``
    ending them; with ``-c`` the first operand is the code, with ``-s`` none is a
    script, else the first operand is the script."""
    code = stdin = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--", "-"):
            i += 1
            break
        if arg.startswith("--"):
            i += 2 if arg in ("--rcfile", "--init-file") else 1
            continue
        if len(arg) < 2 or arg[0] not in "-+":
            break
        code = code or "c" in arg[1:]
        stdin = stdin or "s" in arg[1:]
        i += 1 + sum(1 for letter in arg[1:] if letter in "oO")
    operand = args[i] if i < len(args) else None
    if code:
        return ShellCommand(None, operand)
    return ShellCommand(None if stdin else operand, None)


def command_words(text: str, _nesting: int = 0) -> ShellWords:
    """The commands ``text`` runs (see the module's docstring); never raises."""
    text = _strip_comments(_drop_heredocs(text.replace("\\\n", "")))
    words = ShellWords()
    functions: set[str] = set()
    _walk(_tokens(text), words, functions)
    if _nesting < MAX_NESTING:
        for found in _SUBSTITUTION.finditer(text):
            inner = command_words(found.group(1) or found.group(2) or "", _nesting + 1)
            words.commands += [c for c in inner.commands if c not in words.commands]
            words.calls += [c for c in inner.calls if c not in words.calls]
            words.sourced += [s for s in inner.sourced if s not in words.sourced]
    words.commands = [c for c in words.commands if c not in functions]
    words.calls = [c for c in words.calls if c[0] not in functions]
    return words


def _tokens(text: str) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=_PUNCTUATION)
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""
    tokens: list[str] = []
    try:
        for token in lexer:
            tokens.append(token)
    except ValueError:  # an unclosed quote: keep what came before it
        pass
    return tokens


def _walk(tokens: list[str], words: ShellWords, functions: set[str]) -> None:
    position = True  # the next word is in command position
    skip = 0  # words to pass over (a redirection's file, an option's argument)
    skipping = ""  # "for": until a separator; "case": until "in"
    wrapper: tuple[frozenset[str], int] | None = None
    call: list[str] = []  # the command being read, with its arguments

    def end_call() -> None:
        if call and tuple(call) not in words.calls:
            words.calls.append(tuple(call))
        call.clear()

    for index, token in enumerate(tokens):
        if token and all(c in _PUNCTUATION for c in token):
            if "<" in token or ">" in token:
                skip = 1
                continue
            position, skipping, wrapper, skip = True, "", None, 0
            end_call()
            continue
        if skip:
            skip -= 1
            continue
        if skipping:
            if skipping == "case" and token == "in":
                position, skipping = True, ""
            continue
        if not position:
            if call:
                call.append(token)
            continue
        following = tokens[index + 1] if index + 1 < len(tokens) else ""
        if wrapper is not None:
            options, operands = wrapper
            if token.startswith("-"):
                skip = 1 if token in options else 0
                continue
            if operands and not _ASSIGNMENT.match(token):
                wrapper = (options, operands - 1)
                continue
        if _ASSIGNMENT.match(token) or token in _KEEP_POSITION:
            continue
        if following.startswith(")"):  # a case pattern
            continue
        position, wrapper = False, None
        if following.startswith("("):  # name() { ...; }
            functions.add(token)
            continue
        if token in ("for", "select", "case"):
            skipping = "case" if token == "case" else "for"
            continue
        if token == "function":
            functions.add(following)
            skip = 1
            continue
        if token in (".", "source"):
            if following and not _NOT_A_NAME.search(following):
                words.sourced.append(following)
            continue
        if token in _WRAPPERS or token.rsplit("/", 1)[-1] in _WRAPPERS:
            wrapper = _WRAPPERS[token.rsplit("/", 1)[-1]]
            position = True
        if token in _BUILTINS or token in _END_KEYWORDS or token == "time":
            continue
        plausible = token and not token.startswith("-") and not _NOT_A_NAME.search(token)
        if plausible:
            end_call()
            call.append(token)
            if token not in words.commands:
                words.commands.append(token)
    end_call()


def _drop_heredocs(text: str) -> str:
    """``text`` without the bodies of its here-documents."""
    kept: list[str] = []
    pending: list[tuple[str, bool]] = []  # (delimiter, <<- strips tabs)
    for line in text.split("\n"):
        if pending:
            delimiter, tabs = pending[0]
            if (line.lstrip("\t") if tabs else line) == delimiter:
                pending.pop(0)
            continue
        kept.append(line)
        if not line.lstrip().startswith("#"):
            pending += [(m.group(3), m.group(1) == "-") for m in _HEREDOC.finditer(line)]
    return "\n".join(kept)


def _strip_comments(text: str) -> str:
    """``text`` without ``#`` comments (a ``#`` starting a word, outside quotes)."""
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        c = text[i]
        if quote == "'":
            quote = "" if c == "'" else quote
        elif c == "\\":
            out.append(text[i : i + 2])
            i += 2
            continue
        elif quote == '"':
            quote = "" if c == '"' else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or text[i - 1] in " \t\n;&|()"):
            end = text.find("\n", i)
            if end < 0:
                break
            i = end
            continue
        out.append(c)
        i += 1
    return "".join(out)
