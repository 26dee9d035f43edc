"""The docs stay honest (issue 15, item 7).

Every ``hyperpop ...`` command in README.md and docs/*.md parses against the real command line
(the subcommand and every option exist, values convert, required arguments are there), every
``python benchmarks/...`` or ``python examples/...`` command parses against its script's own
argparse parser (the script runs up to ``parse_args`` and stops there, so no work is done), and
every Python block compiles and uses only names hyperpop has. Nothing here trains anything.

Commands are taken from ``bash``/``sh``/``console`` blocks and from inline code spans. A span in
prose is a mention (``hyperpop status``, ``hyperpop logs DB --member N``): it may leave required
arguments out, but what it does give must parse. Placeholders (``DB``, ``FILE``, ``N``), optional
parts in brackets (``[-f]``) and alternatives (``pin/unpin``, ``json|csv``) are expanded first.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import inspect
import re
import runpy
import shlex
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

#: how placeholders in the docs' usage lines are filled in before parsing
PLACEHOLDERS = {"DB": "runs/x.db", "FILE": "examples/toy.py", "N": "3"}
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
REDIRECTS = {">", ">>", "<", "2>", "2>&1"}
FENCE = re.compile(r"^([ \t]*)```(\w*)[^\n]*\n(.*?)^\1```", flags=re.S | re.M)
SPAN = re.compile(r"`([^`\n]+(?:\n[^`\n]+)?)`")  # wraps at most once


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    text: str


@dataclass(frozen=True)
class Command:
    """One command from the docs: ``kind`` is cli, script or module."""

    doc: str
    line: int
    kind: str
    argv: tuple[str, ...]
    mention: bool  # an inline span in prose: required arguments may be left out
    source: str

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.source}"


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def blocks() -> list[Block]:
    out = []
    for path in DOCS:
        text = path.read_text()
        for m in FENCE.finditer(text):
            indent, lang, body = m.groups()
            line = text.count("\n", 0, m.start()) + 2
            out.append(Block(_rel(path), line, lang, textwrap.dedent(body)))
    return out


def _prose(text: str) -> str:
    """The text with every fenced block blanked out (its lines kept, so offsets keep lines)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def _tokens(line: str) -> list[str]:
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    return list(lex)


def _segments(tokens: list[str]) -> Iterator[list[str]]:
    """Split a shell line at ``&&``, ``|``, ``;`` and ``&``; drop redirections."""
    seg: list[str] = []
    skip = False
    for tok in tokens:
        if skip:
            skip = False
        elif tok in SEPARATORS:
            yield seg
            seg = []
        elif tok in REDIRECTS:
            skip = tok != "2>&1"
        else:
            seg.append(tok)
    yield seg


def _fill(args: list[str]) -> list[list[str]]:
    """Placeholders, ``[optional]`` parts, ``a|b`` values and ``pin/unpin`` subcommands."""
    out = []
    for a in args:
        if a == "...":
            continue
        a = a.removeprefix("[").removesuffix("]")
        a = PLACEHOLDERS.get(a, a)
        if "|" in a and not a.startswith("ray://"):
            a = a.split("|")[0]
        out.append(a)
    if out and "/" in out[0] and not out[0].endswith(".py"):  # `pin/unpin/set DB ...`
        return [[sub, *out[1:]] for sub in out[0].split("/")]
    return [out]


def _command(tokens: list[str], doc: str, line: int, mention: bool, source: str):
    """The hyperpop, benchmark or example commands in one shell segment."""
    if not tokens:
        return []
    prog, rest = tokens[0], tokens[1:]
    name = prog.rsplit("/", 1)[-1]
    found: list[tuple[str, list[str]]] = []
    if name == "hyperpop":
        found = [("cli", rest)]
    elif re.fullmatch(r"python(3(\.\d+)?)?", name) and rest:
        if rest[0] == "-m" and len(rest) > 1:
            if rest[1] == "hyperpop":
                found = [("cli", rest[2:])]
            else:
                found = [("module", rest[1:2])]
        elif rest[0].startswith(("benchmarks/", "examples/")):
            found = [("script", rest)]
    commands = []
    for kind, args in found:
        for filled in _fill(args) if kind == "cli" else [args]:
            commands.append(Command(doc, line, kind, tuple(filled), mention, source))
    return commands


def commands() -> list[Command]:
    out: list[Command] = []
    for b in blocks():
        if b.lang not in SHELL_BLOCKS | {"", "text"}:
            continue
        lines = b.text.replace("\\\n", " ").splitlines()
        for i, line in enumerate(lines):
            if b.lang not in SHELL_BLOCKS and not line.startswith("$ "):
                continue  # a plain or text block holds output; only prompted lines are commands
            line = line.removeprefix("$ ")
            for seg in _segments(_tokens(line)):
                out += _command(seg, b.doc, b.line + i, False, line.strip())
    for path in DOCS:
        prose = _prose(path.read_text())
        for m in SPAN.finditer(prose):
            span = " ".join(m.group(1).replace("\\|", "|").split())  # may wrap across lines
            if re.match(r"(\S*/)?(hyperpop|python3?) ", span):
                line = prose.count("\n", 0, m.start()) + 1
                for seg in _segments(_tokens(span)):
                    out += _command(seg, _rel(path), line, True, span)
    return out


COMMANDS = commands()
CLI = [c for c in COMMANDS if c.kind == "cli"]
SCRIPTS = [c for c in COMMANDS if c.kind == "script"]
MODULES = [c for c in COMMANDS if c.kind == "module"]
PYTHON = [b for b in blocks() if b.lang == "python"]


def test_the_docs_give_commands_of_every_kind():
    # the extraction itself is tested: a change of format must not make the tests vacuous
    assert len(CLI) >= 40 and len(SCRIPTS) >= 20 and len(PYTHON) >= 10
    subcommands = {c.argv[0] for c in CLI if c.argv}
    assert {"run", "status", "resume", "stop", "dashboard", "report", "replay"} <= subcommands
    assert any(c.mention for c in CLI) and any(not c.mention for c in CLI)


def test_placeholders_and_alternatives_are_expanded():
    [cmd] = _command(_tokens("hyperpop logs DB --member N [-f]"), "x", 1, True, "")
    assert cmd.argv == ("logs", "runs/x.db", "--member", "3", "-f")
    subs = _command(_tokens("hyperpop pin/unpin DB ..."), "x", 1, True, "")
    assert [c.argv for c in subs] == [("pin", "runs/x.db"), ("unpin", "runs/x.db")]
    segs = list(_segments(_tokens("a && .venv/bin/hyperpop table DB > out.csv &")))
    assert segs == [["a"], [".venv/bin/hyperpop", "table", "DB"], []]


# -- the command line ------------------------------------------------------------------------


def parse_cli(argv: tuple[str, ...]) -> None:
    """Parse ``hyperpop ARGV`` down to its subcommand without invoking anything.

    Raises click's UsageError (no such command or option, a bad value, a missing argument).
    """
    from hyperpop.cli import main

    cmd: click.Command = main
    name, args, parent = "hyperpop", list(argv), None
    while isinstance(cmd, click.Group) and args and not args[0].startswith("-"):
        ctx = cmd.make_context(name, args[:1], parent=parent)
        sub = cmd.get_command(ctx, args[0])
        if sub is None:
            raise click.UsageError(f"no such command {args[0]!r}", ctx)
        cmd, name, args, parent = sub, args[0], args[1:], ctx
    if isinstance(cmd, click.Group) and not args:  # `hyperpop` alone prints its help
        return
    try:
        cmd.make_context(name, args, parent=parent).close()
    except click.exceptions.Exit as e:  # --help, --version
        assert e.exit_code == 0


@pytest.fixture
def docs_cwd(tmp_path, monkeypatch):
    """A folder that looks like the repository, with empty stores where the docs name one
    (``replay DB`` wants an existing file)."""
    for name in ("examples", "benchmarks", "scripts", "docs", "src"):
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("cmd", CLI, ids=str)
def test_a_hyperpop_command_in_the_docs_parses(cmd, docs_cwd):
    for arg in cmd.argv:
        if arg.endswith(".db") and not arg.startswith("-"):
            (docs_cwd / arg).parent.mkdir(parents=True, exist_ok=True)
            (docs_cwd / arg).touch()
    try:
        parse_cli(cmd.argv)
    except click.MissingParameter:
        if not cmd.mention:
            raise
    except click.UsageError as e:
        pytest.fail(f"{cmd}\n  does not parse: {e.format_message()}")


def test_the_cli_check_catches_drift(docs_cwd):
    (docs_cwd / "runs").mkdir()
    (docs_cwd / "runs/x.db").touch()
    parse_cli(("status", "runs/x.db"))
    parse_cli(("--help",))
    with pytest.raises(click.UsageError, match="no such command"):
        parse_cli(("statuz", "runs/x.db"))
    with pytest.raises(click.NoSuchOption):
        parse_cli(("best", "runs/x.db", "--fromat", "csv"))
    with pytest.raises(click.BadParameter):
        parse_cli(("best", "runs/x.db", "--format", "xml"))
    with pytest.raises(click.BadParameter):  # the run file must exist
        parse_cli(("run", "examples/nonesuch.py"))


# -- scripts -------------------------------------------------------------------------------


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        self.namespace = namespace


def parse_script(argv: tuple[str, ...], monkeypatch) -> argparse.Namespace | None:
    """Run the script as ``__main__`` up to its ``parse_args`` and stop there.

    A script without argparse takes no arguments: it must be given none (None is returned).
    argparse's own error (exit status 2, with its message) propagates as SystemExit.
    """
    path = REPO / argv[0]
    assert path.is_file(), f"{argv[0]} does not exist"
    source = path.read_text()
    compile(source, str(path), "exec")
    if "parse_args" not in source:
        assert len(argv) == 1, f"{argv[0]} reads no arguments, but is given {argv[1:]}"
        return None
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    monkeypatch.setattr(sys, "argv", [str(path), *argv[1:]])
    monkeypatch.setattr(sys, "path", [str(path.parent), *sys.path])
    before = set(sys.modules)
    try:
        runpy.run_path(str(path), run_name="__main__")
    except _Parsed as done:
        return done.namespace
    finally:  # the scripts' helper modules (benchmarks/_common.py) are not left behind
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None) or ""
            if file.startswith((str(REPO / "benchmarks"), str(REPO / "examples"))):
                del sys.modules[name]
    raise AssertionError(f"{argv[0]} finished without calling parse_args")


@pytest.mark.parametrize("cmd", SCRIPTS, ids=str)
def test_a_script_command_in_the_docs_parses(cmd, monkeypatch, capsys):
    try:
        parse_script(cmd.argv, monkeypatch)
    except SystemExit as e:
        pytest.fail(f"{cmd}\n  does not parse (exit {e.code}): {capsys.readouterr().err}")


def test_the_script_check_catches_drift(monkeypatch, capsys):
    args = parse_script(("benchmarks/vs_ray_tune.py", "--toy", "16", "--digits"), monkeypatch)
    assert args.toy == [16] and args.digits == []  # one toy row and no digits row
    with pytest.raises(SystemExit):
        parse_script(("benchmarks/scale.py", "--size", "x"), monkeypatch)
    assert "invalid int value" in capsys.readouterr().err
    with pytest.raises(AssertionError, match="reads no arguments"):
        parse_script(("examples/toy.py", "--smoke"), monkeypatch)


@pytest.mark.parametrize("cmd", MODULES, ids=str)
def test_a_module_the_docs_run_exists(cmd):
    assert importlib.util.find_spec(cmd.argv[0]) is not None, str(cmd)


# -- Python blocks ---------------------------------------------------------------------------


def hyperpop_names(tree: ast.AST) -> list[tuple[str, str, int]]:
    """(module, name, line) for every name the code takes from hyperpop: ``from hyperpop.x
    import a`` and ``hp.a`` / ``hp.x.a`` after ``import hyperpop as hp``."""
    aliases: dict[str, str] = {}
    used = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "hyperpop":
                    aliases[a.asname or "hyperpop"] = a.name if a.asname else "hyperpop"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hyperpop"):
            used += [(node.module, a.name, node.lineno) for a in node.names]
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, base = [node.attr], node.value
            while isinstance(base, ast.Attribute):
                chain.insert(0, base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in aliases:
                used.append((aliases[base.id], ".".join(chain), node.lineno))
    return used


def _resolve(module: str, dotted: str) -> bool:
    obj = importlib.import_module(module)
    for part in dotted.split("."):
        if not hasattr(obj, part):
            try:  # a submodule: hp.torch.ScheduleLR
                obj = importlib.import_module(f"{obj.__name__}.{part}")
            except (ImportError, AttributeError):
                return False
        else:
            obj = getattr(obj, part)
    return True


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: f"{b.doc}:{b.line}")
def test_a_python_block_compiles_and_its_hyperpop_names_exist(block):
    tree = ast.parse(block.text, filename=block.doc)  # a SyntaxError names the line
    compile(tree, block.doc, "exec")
    missing = []
    for module, name, lineno in hyperpop_names(tree):
        if name in ("torch", "vectorized") or module.endswith((".torch", ".vectorized")):
            pytest.importorskip("torch")
        if not _resolve(module, name):
            missing.append(f"{block.doc}:{block.line + lineno - 1}: {module}.{name}")
    assert not missing, "names the docs use that hyperpop does not have:\n" + "\n".join(missing)


def test_the_python_check_catches_drift():
    tree = ast.parse(
        "import hyperpop as hp\nfrom hyperpop.strategies import register, Nonesuch\n"
        "hp.run(hp.Steps(3), hp.torch.ScheduleLR, hp.uniformly)\nresult.best.config\n"
    )
    names = {(m, n) for m, n, _ in hyperpop_names(tree)}
    assert ("hyperpop", "uniformly") in names and ("hyperpop.strategies", "Nonesuch") in names
    assert ("hyperpop", "torch.ScheduleLR") in names
    assert not any(n.startswith("best") for _, n in names)  # `result` is not hyperpop
    assert _resolve("hyperpop", "Steps") and _resolve("hyperpop.strategies", "register")
    assert not _resolve("hyperpop", "uniformly")
    assert not _resolve("hyperpop.strategies", "Nonesuch")


# -- documented defaults ---------------------------------------------------------------------


def tables(text: str) -> list[list[tuple[int, list[str]]]]:
    """Each Markdown table as (line number, cells) rows, the header first, no separator row."""
    out: list[list[tuple[int, list[str]]]] = []
    previous = False
    for number, line in enumerate(text.splitlines(), 1):
        is_row = line.startswith("|")
        if is_row and not previous:
            out.append([])
        if is_row and not re.fullmatch(r"[|\s:-]+", line):
            out[-1].append((number, [c.strip() for c in line.strip().strip("|").split("|")]))
        previous = is_row
    return out


def documented_signatures() -> list[tuple[str, str]]:
    """(where, span) for every table cell that shows a hyperpop class with keyword values,
    such as `Truncation(quantile=0.25)` in a table of defaults."""
    out = []
    for path in DOCS:
        rows = [row for table in tables(path.read_text()) for row in table]
        for number, cells in rows:
            for cell in cells:
                m = re.fullmatch(r"`([A-Z]\w*\(\w+=.*\))`", cell)
                if m:
                    out.append((f"{_rel(path)}:{number}", m.group(1)))
    return out


def wrong_defaults(span: str) -> list[str]:
    """The keyword values in ``Name(k=v, ...)`` that are not Name's defaults in hyperpop."""
    import hyperpop

    call = ast.parse(span, mode="eval").body
    assert isinstance(call, ast.Call) and isinstance(call.func, ast.Name), span
    if not hasattr(hyperpop, call.func.id):
        return [f"hyperpop has no {call.func.id}"]
    params = inspect.signature(getattr(hyperpop, call.func.id)).parameters
    wrong = []
    for kw in call.keywords:
        if kw.arg not in params:
            wrong.append(f"{kw.arg}: not a parameter")
        elif ast.literal_eval(kw.value) != params[kw.arg].default:
            wrong.append(f"{kw.arg}={ast.unparse(kw.value)}, code: {params[kw.arg].default!r}")
    return wrong


def test_class_defaults_in_the_docs_tables_are_the_codes():
    spans = documented_signatures()
    assert len(spans) >= 4  # the strategies' tables
    wrong = [f"{where}: {span}: {w}" for where, span in spans for w in wrong_defaults(span)]
    assert not wrong, "\n".join(wrong)
    assert wrong_defaults("PB2(kappa=1.5, refit=1)") == ["refit=1, code: 20"]


def test_the_run_arguments_table_matches_hp_run():
    import hyperpop as hp

    params = inspect.signature(hp.run).parameters
    rows = [
        (f"{_rel(path)}:{number}", cells)
        for path in DOCS
        for table in tables(path.read_text())
        if table[0][1][:2] == ["argument", "default"]
        for number, cells in table[1:]
    ]
    assert len(rows) >= 15
    wrong = []
    for where, (name, default, *_) in rows:
        name = name.strip("`")
        if name not in params:
            wrong.append(f"{where}: hp.run has no argument {name!r}")
            continue
        try:
            value = ast.literal_eval(default.strip("`"))
        except (ValueError, SyntaxError):
            continue  # described in words ("cores", "shown") or an expression (`Steps(100)`)
        if value != params[name].default:
            wrong.append(f"{where}: {name} defaults to {params[name].default!r}, not {default}")
    assert not wrong, "\n".join(wrong)
