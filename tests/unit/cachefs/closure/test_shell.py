"""Shell command lines and the command words of a shell text."""

from __future__ import annotations

from cachefs.closure.shell import ShellCommand, command_words, parse_shell


def test_parse_a_shell_command_line() -> None:
    assert parse_shell(["-ec", "a; b", "name", "arg"]) == ShellCommand(None, "a; b")
    assert parse_shell(["-o", "pipefail", "x.sh", "a"]) == ShellCommand("x.sh", None)
    assert parse_shell(["--norc", "--rcfile", "f", "-x", "y.sh"]) == ShellCommand("y.sh", None)
    assert parse_shell(["-s", "a"]) == ShellCommand(None, None)
    assert parse_shell(["--", "-odd"]) == ShellCommand("-odd", None)
    assert parse_shell([]) == ShellCommand(None, None)


SCRIPT = """#!/bin/sh
# a comment naming grep, with a 'quote
set -e
X=1 Y=$(mktemp -d) tar -cf x.tar . 2>&1 >/dev/null
f() { sed -n p; }
for i in cut paste; do
  date | tr a-z A-Z && nice -n 5 gzip x || timeout 5 sleep 1
done
cat <<EOF
ls in a here-document
EOF
case "$1" in
  start) head -1 ;;
  *) exit 1 ;;
esac
echo "today `hostname` is $(uname -r)" # trailing comment
env -u A B=2 wc x
if [ -f x ]; then f; fi
$CMD arg; ./local.sh; *.glob
"""


def test_commands_in_command_position_only() -> None:
    words = command_words(SCRIPT)
    assert words.commands == [
        "mktemp", "tar", "sed", "date", "tr", "nice", "gzip", "timeout", "sleep", "cat",
        "head", "env", "wc", "./local.sh", "hostname", "uname",
    ]  # fmt: skip
    # not commands: builtins, keywords, the function, loop words, arguments, comments,
    # a here-document's body, expansions
    for word in ("set", "echo", "f", "cut", "paste", "ls", "grep", "exit", "[", "x", "$CMD"):
        assert word not in words.commands


def test_calls_keep_their_arguments_without_redirections() -> None:
    text = "cd /x && python3 -u 'my job.py' 3 >log </dev/null | sort -n\nf() { g; }; f arg"
    words = command_words(text)
    assert words.calls == [("python3", "-u", "my job.py", "3"), ("sort", "-n"), ("g",)]


def test_sourced_files_and_unbalanced_quotes() -> None:
    words = command_words(". ./lib.sh\nsource common.sh; od x\n")
    assert words.sourced == ["./lib.sh", "common.sh"] and words.commands == ["od"]
    # an unclosed quote ends the scan where it starts, without an error
    assert command_words("tac x; echo 'never closed\nrev\n").commands == ["tac"]
