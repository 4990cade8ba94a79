"""Real programs from Debian packages, run as users run them: issue 13's yardstick.

The seed's environment root is "a minimal Unix root configured by the master"
with "a master with its full reference install to fall on" for what a job's
closure missed. Whether that holds is measured here, on programs people run:
interpreters given a script, programs that read their configuration, data or
plugins at run time (openssl.cnf, tzdata, gconv modules, the JDK's modules
file, Open MPI's components), and programs that run others (git, cmake, tar).

Each :class:`RealProgram` is what a user types after ``beosub --``, the files
it needs in the submit directory, what is compiled there first (as the user,
on the submit host: a class file, an MPI binary) and what each node's output
must show. Each runs in well under 5 s here. The catalog holds no test logic:
``test_real_programs.py`` runs it on a cluster, and anything else (a benchmark,
a demo) may.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

#: The PATH of an ordinary user's login shell on Debian (root's here names
#: /root/.pyenv, which no user can read).
USER_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class File:
    """A file to create in the submit directory (``path`` relative to it)."""

    path: str
    content: str | bytes
    mode: int = 0o644

    def data(self) -> bytes:
        return self.content.encode() if isinstance(self.content, str) else self.content


@dataclass(frozen=True)
class RealProgram:
    """One real program as a user runs it.

    ``expect``: regular expressions (multi-line) each of which must be found in
    every node's ``stream``, decoded with ``encoding``; ``status`` the exit
    status. ``setup``: commands run in the submit dir as the user before the
    submission. ``needs``: programs the submit host must have (argv[0] and the
    setup's are added)."""

    name: str
    argv: tuple[str, ...]
    expect: tuple[str, ...]
    files: tuple[File, ...] = ()
    setup: tuple[tuple[str, ...], ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    stream: Literal["stdout", "stderr"] = "stdout"
    status: int = 0
    encoding: str = "utf-8"
    needs: tuple[str, ...] = ()

    def programs(self) -> tuple[str, ...]:
        """Every program this one needs on the submit host."""
        return tuple(dict.fromkeys((self.argv[0], *(c[0] for c in self.setup), *self.needs)))

    def missing(self) -> list[str]:
        """Programs of :meth:`programs` not found along :data:`USER_PATH`."""
        return [
            p for p in self.programs() if "/" not in p and shutil.which(p, path=USER_PATH) is None
        ]

    def failed_checks(self, output: str) -> list[str]:
        """The ``expect`` patterns not found in ``output`` (one node's stream)."""
        return [p for p in self.expect if re.search(p, output, re.MULTILINE) is None]

    def lay_out(self, directory: Path, uid: int, gid: int) -> None:
        """Create ``directory`` and the files, owned by uid/gid (as the user's own)."""
        directory.mkdir(mode=0o755)
        os.chown(directory, uid, gid)
        for f in self.files:
            path = directory / f.path
            for parent in reversed(path.relative_to(directory).parents[:-1]):
                sub = directory / parent
                if not sub.exists():
                    sub.mkdir(mode=0o755)
                    os.chown(sub, uid, gid)
            path.write_bytes(f.data())
            path.chmod(f.mode)
            os.chown(path, uid, gid)


def user_env(account: pwd.struct_passwd, extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The environment of ``account``'s login with ``extra``: a user's PATH,
    HOME, USER, LOGNAME, the C.UTF-8 locale, and no TZ unless ``extra`` has it."""
    return {
        "PATH": USER_PATH,
        "HOME": account.pw_dir,
        "USER": account.pw_name,
        "LOGNAME": account.pw_name,
        "LANG": "C.UTF-8",
        **extra,
    }


def as_user(account: pwd.struct_passwd, env: Mapping[str, str], argv: Sequence[str]) -> list[str]:
    """``argv`` run as ``account`` with exactly ``env`` (runuser, then ``env -i``)."""
    return [
        "runuser",
        "-u",
        account.pw_name,
        "--",
        "env",
        "-i",
        *(f"{k}={v}" for k, v in env.items()),
        *argv,
    ]


def run_setup(program: RealProgram, directory: Path, account: pwd.struct_passwd) -> None:
    """Run the program's setup commands in ``directory`` as ``account``.
    Raises AssertionError with the command's output when one fails."""
    for command in program.setup:
        done = subprocess.run(
            as_user(account, user_env(account), command),
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise AssertionError(
                f"{program.name}: setup {' '.join(command)} exited {done.returncode}: "
                f"{done.stderr}{done.stdout}"
            )


# --- the programs' files -----------------------------------------------------

HELPER_PY = 'def greet(name):\n    return f"hello {name}"\n'
MAIN_PY = """\
import json
import sqlite3
import ssl

import helper

db = sqlite3.connect(":memory:")
db.execute("create table t (x)")
db.executemany("insert into t values (?)", [(1,), (2,), (3,)])
total = db.execute("select sum(x) from t").fetchone()[0]
ctx = ssl.create_default_context()
ctx.load_verify_locations("/etc/ssl/certs/ca-certificates.crt")
cas = len(ctx.get_ca_certs()) > 50
print(json.dumps({"greet": helper.greet("node"), "sum": total, "cas": cas}))
"""
NUMPY_PY = """\
import numpy as np

a = np.arange(12, dtype=np.float64).reshape(3, 4)
det = np.linalg.det(np.array([[2.0, 1.0], [1.0, 3.0]]))
print("numpy", np.__version__, "sum", int(a.sum()), "det", round(float(det), 6))
"""
FINDER_PY = """\
import importlib
import pkgutil

import plugins

for info in sorted(pkgutil.iter_modules(plugins.__path__), key=lambda m: m.name):
    module = importlib.import_module(f"plugins.{info.name}")
    print("plugin", info.name, module.VALUE)
"""
MODULES_PL = """\
use strict;
use warnings;
use File::Temp qw(tempfile);
use Data::Dumper;
use List::Util qw(sum max);
$Data::Dumper::Sortkeys = 1;
$Data::Dumper::Indent = 0;
my ($fh, $name) = tempfile(UNLINK => 1);
print $fh "x" x 10;
close $fh;
my @n = (1 .. 5);
print "sum=", sum(@n), " max=", max(@n), " size=", -s $name, "\\n";
print Dumper({a => 1, b => [2, 3]}), "\\n";
"""
GIT_SH = """\
set -e
repo=$(mktemp -d)
cd "$repo"
git init -q
echo hello > greeting
git add greeting
git -c user.name=Beo -c user.email=beo@example.invalid commit -q -m "first commit"
git log --format='%an %s'
git cat-file -p HEAD:greeting
"""
TOOLS_SH = """\
#!/bin/sh
set -e
dir=$(mktemp -d)
printf 'pear 3\\napple 1\\nfig 2\\n' > "$dir/fruit"
sort -k2 -n "$dir/fruit" | awk '{ print "fruit " NR ": " $1 }' | sed 's/fruit/fruit no./'
date -u -d @0 +%Y
git --version | sed 's/[0-9][0-9.]*$/N/'
rm -r "$dir"
"""
CMAKE_LISTS = """\
cmake_minimum_required(VERSION 3.13)
project(hello C)
add_executable(hello hello.c)
"""
HELLO_C = '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'
HELLO_JAVA = """\
public class Hello {
    public static void main(String[] args) {
        System.out.println("Hello from Java " + System.getProperty("java.specification.version"));
    }
}
"""
#: Rank 0 sends a number to every other rank; each prints where it runs.
MPI_HELLO_C = r"""
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int rank, size, value = 0;
    char host[256];
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    gethostname(host, sizeof host);
    if (rank == 0) {
        value = 42;
        for (int r = 1; r < size; r++)
            MPI_Send(&value, 1, MPI_INT, r, 0, MPI_COMM_WORLD);
    } else {
        MPI_Recv(&value, 1, MPI_INT, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    printf("rank %d of %d on %s got %d\n", rank, size, host, value);
    MPI_Finalize();
    return 0;
}
"""
MPI_SETUP = ("mpicc", "-O1", "-o", "mpi_hello", "mpi_hello.c")
TEXT = "the quick brown fox\n"
TAR_TEXT = "hello from a tarball\n"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


CATALOG: tuple[RealProgram, ...] = (
    RealProgram(
        "python-local-module",
        ("python3", "main.py"),
        (r'^\{"greet": "hello node", "sum": 6, "cas": true\}$',),
        files=(File("main.py", MAIN_PY), File("helper.py", HELPER_PY)),
    ),
    RealProgram(
        "python-c-imports",
        (
            "python3",
            "-c",
            "import json, sqlite3, ssl; "
            "print('imports ok', sqlite3.sqlite_version, ssl.OPENSSL_VERSION)",
        ),
        (r"^imports ok 3\.\d+\.\d+ OpenSSL 3\.",),
    ),
    RealProgram(
        "python-json-tool",
        ("python3", "-m", "json.tool", "data.json"),
        (r'^    "b": \[\n        1,\n        2\n    \],\n    "a": "x"\n\}$',),
        files=(File("data.json", '{"b": [1, 2], "a": "x"}\n'),),
    ),
    RealProgram(
        "python-numpy",
        ("python3", "numpy_demo.py"),
        (r"^numpy 1\.\d+\.\d+ sum 66 det 5\.0$",),
        files=(File("numpy_demo.py", NUMPY_PY),),
    ),
    RealProgram(
        "python-plugin-dir",
        ("python3", "finder.py"),
        (r"^plugin alpha 1\nplugin beta 2$",),
        files=(
            File("finder.py", FINDER_PY),
            File("plugins/__init__.py", ""),
            File("plugins/alpha.py", "VALUE = 1\n"),
            File("plugins/beta.py", "VALUE = 2\n"),
        ),
    ),
    RealProgram(
        "python-zoneinfo",
        (
            "python3",
            "-c",
            "import datetime, zoneinfo; paris = zoneinfo.ZoneInfo('Europe/Paris'); "
            "print(datetime.datetime(2000, 1, 1, tzinfo=paris).tzname())",
        ),
        (r"^CET$",),
    ),
    RealProgram(
        "perl-posix",
        (
            "perl",
            "-MPOSIX",
            "-e",
            'print floor(7 / 2), " ", strftime("%Y-%m-%d", gmtime(86400)), "\\n"',
        ),
        (r"^3 1970-01-02$",),
    ),
    RealProgram(
        "perl-modules",
        ("perl", "modules.pl"),
        (r"^sum=15 max=5 size=10\n\$VAR1 = \{'a' => 1,'b' => \[2,3\]\};$",),
        files=(File("modules.pl", MODULES_PL),),
    ),
    RealProgram("psql-version", ("psql", "--version"), (r"^psql \(PostgreSQL\) \d+\.\d+",)),
    RealProgram(
        "openssl-dgst",
        ("openssl", "dgst", "-sha256", "data.txt"),
        (rf"^SHA2-256\(data\.txt\)= {_sha256(TEXT)}$",),
        files=(File("data.txt", TEXT),),
    ),
    RealProgram(
        "openssl-req-x509",
        (
            *("openssl", "req", "-new", "-x509", "-newkey", "ec"),
            *("-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", "/tmp/key.pem", "-subj", "/CN=x", "-days", "1"),
        ),
        (r"^-----BEGIN CERTIFICATE-----$", r"^-----END CERTIFICATE-----$"),
    ),
    RealProgram(
        "git-commit",
        ("sh", "git-demo.sh"),
        (r"^Beo first commit\nhello$",),
        files=(File("git-demo.sh", GIT_SH),),
        needs=("git",),
    ),
    RealProgram(
        "tar-czf",
        ("tar", "czvf", "/tmp/out.tgz", "data"),
        (r"^data/hello\.txt$",),
        files=(File("data/hello.txt", TAR_TEXT),),
        needs=("gzip",),
    ),
    RealProgram(
        "tar-xzf",
        ("tar", "xzOf", "archive.tgz", "data/hello.txt"),
        (rf"^{TAR_TEXT.strip()}$",),
        files=(File("data/hello.txt", TAR_TEXT),),
        setup=(("tar", "czf", "archive.tgz", "data"),),
        needs=("gzip",),
    ),
    RealProgram(
        "cmake-configure",
        ("cmake", "-S", "proj", "-B", "/tmp/build"),
        (r"^-- The C compiler identification is GNU", r"^-- Build files have been written to: "),
        files=(File("proj/CMakeLists.txt", CMAKE_LISTS), File("proj/hello.c", HELLO_C)),
        needs=("cc", "make"),
    ),
    RealProgram(
        "java-version",
        ("java", "-version"),
        (r'^openjdk version "\d+',),
        stream="stderr",
    ),
    RealProgram(
        "java-class",
        ("java", "-cp", ".", "Hello"),
        (r"^Hello from Java \d+$",),
        files=(File("Hello.java", HELLO_JAVA),),
        setup=(("javac", "Hello.java"),),
    ),
    RealProgram("gdb-python", ("gdb", "-batch", "-ex", "python print(6 * 7)"), (r"^42$",)),
    RealProgram(
        "file-magic",
        ("file", "data.txt", "script.sh"),
        (r"^data\.txt: +ASCII text$", r"^script\.sh: +POSIX shell script, ASCII text executable$"),
        files=(File("data.txt", TEXT), File("script.sh", "#!/bin/sh\necho hi\n", 0o755)),
    ),
    RealProgram(
        "iconv-latin1",
        ("iconv", "-f", "UTF-8", "-t", "ISO-8859-1", "utf8.txt"),
        (r"^café crème$",),
        files=(File("utf8.txt", "café crème\n"),),
        encoding="latin-1",
    ),
    RealProgram(
        "date-tz-tokyo",
        ("date", "-d", "@0", "+%Z %H:%M"),
        (r"^JST 09:00$",),
        env={"TZ": "Asia/Tokyo"},
    ),
    RealProgram(
        "id-names",
        ("id",),
        (r"^uid=\d+\([a-z_][a-z0-9_-]*\) gid=\d+\([a-z_][a-z0-9_-]*\) groups=",),
    ),
    RealProgram(
        "shell-script-tools",
        ("./tools.sh",),
        (r"^fruit no\. 1: apple\nfruit no\. 2: fig\nfruit no\. 3: pear\n1970\ngit version N$",),
        files=(File("tools.sh", TOOLS_SH, 0o755),),
        needs=("git", "mktemp", "awk", "sed", "sort", "date"),
    ),
    RealProgram(
        "mpi-one-node",
        ("mpirun", "-np", "2", "--oversubscribe", "./mpi_hello"),
        (r"^rank 0 of 2 on \S+ got 42$", r"^rank 1 of 2 on \S+ got 42$"),
        files=(File("mpi_hello.c", MPI_HELLO_C),),
        setup=(MPI_SETUP,),
    ),
)


def by_name(names: Sequence[str] | None = None) -> list[RealProgram]:
    """The catalog, or the programs named (KeyError naming an unknown one)."""
    if names is None:
        return list(CATALOG)
    index = {p.name: p for p in CATALOG}
    return [index[n] for n in names]
