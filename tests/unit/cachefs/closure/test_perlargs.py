"""perl's command line: switches (clustered or not), -e code, -M modules, the script."""

from __future__ import annotations

from cachefs.closure.perlargs import PerlCommand, module_of, parse_perl


def test_switches_then_the_script_and_its_arguments() -> None:
    args = ["-w", "-Ilib", "-I", "inc", "-MPOSIX=strftime", "-M", "List::Util", "-mstrict"]
    command = parse_perl([*args, "s.pl", "-e"])
    assert command == PerlCommand(
        "s.pl", (), ("POSIX", "List::Util", "strict"), ("lib", "inc"), (), False
    )


def test_code_may_repeat_and_hides_the_script() -> None:
    command = parse_perl(["-wle", "print 1", "-E", "say 2", "file.txt"])
    assert command.code == ("print 1", "say 2") and command.script is None
    assert parse_perl(["-0777", "-ne", "print"]).code == ("print",)
    assert parse_perl(["-CSDA", "-l012", "-e1"]).code == ("1",)


def test_end_of_switches_stdin_search_and_debugger() -> None:
    assert parse_perl(["--", "-odd.pl"]).script == "-odd.pl"
    assert parse_perl(["-"]).script is None
    assert parse_perl(["-S", "tool"]).search_path
    assert parse_perl(["-d:NYTProf", "s.pl"]).modules == ("Devel::NYTProf",)
    assert parse_perl(["-d", "s.pl"]).files == ("perl5db.pl",)
    assert parse_perl(["-x", "-i.bak", "s.pl"]).script == "s.pl"


def test_module_of_a_switch_argument() -> None:
    assert module_of("POSIX qw(floor)") == "POSIX"
    assert module_of("-warnings") == "warnings"  # -M-warnings is "no warnings"
    assert module_of("=x") is None
