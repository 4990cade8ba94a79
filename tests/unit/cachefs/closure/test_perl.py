"""Perl modules found statically: the scanner, the @INC search with auto/ files, @INC."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from cachefs.closure.perl import perl_files, perl_inc, scan_perl

PERL_CODE = """#!/usr/bin/perl
use strict; use v5.36;
use FindBin;
use lib "$FindBin::Bin/lib", 'rel', $computed;
use parent -norequire, 'NotLoaded';
use base qw(Base::One Base::Two);
use if $] < 5.008, 'utf8';
require 'Config_heavy.pl';
eval { require Carp::Heavy; 1 };
my $x = Some::Class->use; $h{require} = 1;
=head1 SYNOPSIS

    use InPod;

=cut
# use InComment;
no warnings 'once';
__END__
use AfterEnd;
"""


def test_scan_finds_loads_and_skips_pod_comments_and_the_end() -> None:
    refs = scan_perl(PERL_CODE, ("/bin/dir", "/real/dir"))
    assert refs.modules == [
        "strict", "FindBin", "lib", "parent", "base", "if", "Carp::Heavy", "warnings",
        "feature", "strict", "warnings", "Base::One", "Base::Two", "utf8",
    ]  # fmt: skip
    assert refs.files == ["Config_heavy.pl"]
    assert refs.lib_dirs == ["/bin/dir/lib", "rel"]  # $computed is not known
    for absent in ("InPod", "InComment", "AfterEnd", "NotLoaded", "Some::Class"):
        assert absent not in refs.modules


def test_use_version_loads_its_pragmas() -> None:
    assert scan_perl("use 5.010;").modules == ["feature"]
    assert scan_perl("use v5.12;").modules == ["feature", "strict"]
    assert scan_perl("use 5.006_001;").modules == []


def _module(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_modules_are_found_in_inc_order_recursively_with_their_auto_files(
    tmp_path: Path,
) -> None:
    first, second, local = tmp_path / "first", tmp_path / "second", tmp_path / "work/lib"
    top = _module(first, "Top.pm", "package Top; use Dep::XS; require 'helper.pl'; 1;")
    _module(second, "Top.pm", "package Top; use Shadowed; 1;")  # later in @INC: unused
    dep = _module(second, "Dep/XS.pm", "package Dep::XS; require XSLoader; 1;")
    shared = _module(second, "auto/Dep/XS/XS.so", "not really ELF")
    autoload = _module(second, "auto/Dep/XS/autosplit.ix", "")
    _module(second, "auto/Dep/XS/Inner/Inner.so", "another module's")
    helper = _module(second, "helper.pl", "1;")
    mine = _module(local, "Mine.pm", "1;")
    found = perl_files(
        [str(first), str(second)],
        [("use lib 'lib'; use Top; use Mine; use Absent;", "/usr/bin/perl")],
        modules=[("Dep::XS", "/usr/bin/perl")],
        cwd=str(tmp_path / "work"),
    )
    paths = {f.path: f for f in found}
    assert set(paths) == {str(p) for p in (top, dep, shared, autoload, helper, mine)}
    assert paths[str(shared)].library and not paths[str(autoload)].library
    assert paths[str(shared)].needer == str(dep)
    assert paths[str(top)].needer == "/usr/bin/perl"
    assert paths[str(helper)].needer == str(top)


@pytest.mark.skipif(shutil.which("perl", path="/usr/bin") is None, reason="needs perl")
def test_inc_is_the_target_perls_with_perl5lib(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PERL5LIB": "mine"}
    inc = perl_inc("/usr/bin/perl", env=env, cwd=str(tmp_path))
    assert inc[0] == str(tmp_path / "mine")  # relative, from the working directory
    assert any(os.path.isfile(os.path.join(d, "strict.pm")) for d in inc)
