"""Every fenced code block of README.md and docs/*.md is executed, so an example cannot go stale.

* ``python`` blocks run in a temporary directory; the python blocks of one page share one
  namespace, in page order (a page's examples build on each other).
* ``bash``/``sh``/``shell``/``console`` blocks: each ``python X.py ...`` / ``python -m MODULE ...``
  line runs in-process with ``argparse.ArgumentParser.parse_args`` patched to stop the program
  right after the command's own parser accepted its real argv — every documented flag exists and
  parses, nothing is trained. Refusing an input file that does not exist here is accepted; an
  unknown option (a ``UsageError``) fails. ``pip install`` lines: the extras exist in
  pyproject.toml; ``python -m pytest`` lines: the test files exist and the ``-m`` markers are
  registered. ``bash FILE`` / ``cd DIR``: the file or directory exists in the repository.
  Any other line fails unless the block is marked.
* A block that cannot run carries ``<!-- not run: REASON -->`` on the line right before it.
* Plain fences and ``text`` blocks are output, not code; ``json`` blocks must parse.
* Also: every ``--option`` a page names exists in some command's ``--help``; README.md is at most
  250 lines and links every docs page; relative links and their anchors resolve.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import re
import runpy
import shlex
import sys
import tomllib
from pathlib import Path

import pytest

from automedsam_jax.io.errors import BadInputError, UsageError

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CODE = {"python": "python", "bash": "bash", "sh": "bash", "shell": "bash", "console": "bash"}
NOT_RUN = re.compile(r"^<!--\s*not run:(.*)-->\s*$")
FENCE = re.compile(r"^(\s*)```([\w+-]*)\s*$")
SLOW_PAGES = {"models.md"}  # pages whose python blocks take more than ~10 s


class Block:
    def __init__(self, page: Path, line: int, lang: str, text: str, marker: str | None):
        self.page, self.line, self.lang, self.text, self.marker = page, line, lang, text, marker

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page: (line of the opening fence, language, text, marker)."""
    out, lines, i = [], page.read_text().splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang, body = i, m.group(2).lower(), []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith("```"):
            body.append(lines[i][len(m.group(1)):])
            i += 1
        assert i < len(lines), f"{page.name}:{start + 1}: unclosed code fence"
        prev = lines[start - 1].strip() if start else ""
        marker = NOT_RUN.match(prev)
        out.append(Block(page, start + 1, lang, "\n".join(body) + "\n",
                         marker.group(1).strip() if marker else None))
        i += 1
    return out


ALL = [b for p in PAGES for b in blocks(p)]
RUN = [b for b in ALL if b.lang in CODE and b.marker is None]
MARKED = [b for b in ALL if b.marker is not None]


def test_blocks_found():
    assert len(RUN) >= 25, [b.id for b in RUN]  # 28 when written
    assert {b.lang for b in RUN if CODE[b.lang] == "python"}, "no python block runs"


@pytest.mark.parametrize("block", MARKED, ids=lambda b: b.id)
def test_marked_block_gives_a_reason(block):
    assert block.marker, f"{block.id}: '<!-- not run: -->' needs a reason"
    assert block.lang in CODE, f"{block.id}: only code blocks are run, no marker needed"


def test_unknown_languages():
    known = set(CODE) | {"", "text", "json"}
    assert not [b.id for b in ALL if b.lang not in known]


# ----------------------------------------------------------------------------- python blocks

_namespaces: dict[Path, dict] = {}


def _python_param(b: Block):
    slow = b.page.name in SLOW_PAGES
    return pytest.param(b, id=b.id, marks=[pytest.mark.slow] if slow else [])


@pytest.fixture(scope="module")
def page_dirs(tmp_path_factory):
    return {p: tmp_path_factory.mktemp(p.stem) for p in PAGES}


@pytest.mark.parametrize("block", [_python_param(b) for b in RUN if b.lang == "python"])
def test_python_block(block, page_dirs, monkeypatch):
    """One directory and one namespace per page: its blocks run in page order and share both
    (a block selected alone runs the page's earlier blocks first)."""
    monkeypatch.chdir(page_dirs[block.page])
    ns = _namespaces.setdefault(block.page, {"__name__": f"docs_{block.page.stem}", "_ran": set()})
    for b in [b for b in RUN if b.page == block.page and b.lang == "python"]:
        if b.line < block.line and b.line not in ns["_ran"]:
            exec(compile(b.text, b.id, "exec"), ns)
            ns["_ran"].add(b.line)
    ns["_ran"].add(block.line)
    exec(compile(block.text, block.id, "exec"), ns)


# ------------------------------------------------------------------------------- bash blocks


class Parsed(BaseException):
    """Raised right after the command's parser accepted its argv (a BaseException: the apps'
    ``except Exception`` must not swallow it)."""


def commands(text: str) -> list[tuple[int, list[str]]]:
    """(line offset, argv) of each command, continuation lines joined and comments dropped."""
    out, pending, first = [], "", 0
    for k, line in enumerate(text.splitlines()):
        if not pending:
            first = k
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        argv = shlex.split(pending + line, comments=True)
        pending = ""
        if argv:
            out.append((first, argv))
    return out


def _parse_only(monkeypatch) -> list[str]:
    """Patch parse_args to stop after success; return the list the UsageErrors raised go to."""
    original = argparse.ArgumentParser.parse_args
    depth = [0]
    usage: list[str] = []

    def parse_args(self, *args, **kwargs):
        depth[0] += 1
        try:
            result = original(self, *args, **kwargs)
        finally:
            depth[0] -= 1
        if depth[0] == 0:
            raise Parsed
        return result

    init = UsageError.__init__

    def record(self, *args):
        usage.append(" ".join(map(str, args)))
        init(self, *args)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_args)
    monkeypatch.setattr(UsageError, "__init__", record)
    return usage


def run_python(argv: list[str], monkeypatch) -> str:
    """``python ARGS``: run the script or module with its argv until its parser returns; its
    stdout."""
    args = argv[1:]
    if args[0] == "-m":
        target, rest = args[1], args[2:]
        run = lambda: runpy.run_module(target, run_name="__main__", alter_sys=True)  # noqa: E731
        script = target
    else:
        path = REPO / args[0]
        assert path.is_file(), f"{args[0]} does not exist"
        rest, script = args[1:], str(path)
        monkeypatch.syspath_prepend(str(path.parent))
        run = lambda: runpy.run_path(str(path), run_name="__main__")  # noqa: E731
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setattr(sys, "argv", [script, *rest])
    usage = _parse_only(monkeypatch)
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            run()
    except Parsed:
        return out.getvalue()
    except (FileNotFoundError, BadInputError) as e:
        if usage or not _names_missing_path(str(e), rest):
            raise
        return out.getvalue()
    except SystemExit as e:
        if e.code in (0, None) and ("--help" in rest or "-h" in rest):
            return out.getvalue()  # argparse printed the help while parsing
        message = f"{e.code if not isinstance(e.code, int) else ''} {err.getvalue()}"
        bad = [u for u in usage if not _names_missing_path(u, rest) or OPTION_ERROR.search(u)]
        assert not bad, f"{' '.join(argv)}: refused its options: {bad[-1]}"
        assert _names_missing_path(message, rest), f"{' '.join(argv)} exited {e.code}: {message}"
        return out.getvalue()
    pytest.fail(f"{' '.join(argv)}: finished without parsing arguments")


OPTION_ERROR = re.compile(r"unrecognized arguments|invalid choice|expected (one|at least)|"
                          r"required|invalid \w+ value|must be")


def _names_missing_path(message: str, argv: list[str]) -> bool:
    """The refusal names an argument that is a path not present here."""
    paths = [a for a in argv if ("/" in a or "." in a) and not a.startswith("-")
             and not Path(a).exists()]
    return any(p.split(":")[0] in message or p.rstrip("/") in message for p in paths)


def check_pytest(argv: list[str]) -> None:
    """``python -m pytest``: the test files named exist; the markers named in ``-m`` are
    registered in pyproject.toml."""
    for a in argv[3:]:
        if a.startswith("tests"):
            assert (REPO / a.split("::")[0]).exists(), f"{a} does not exist"
    ini = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    registered = {m.split(":")[0].strip() for m in ini.get("markers", [])}
    if "-m" in argv[3:]:
        expr = argv[argv.index("-m", 3) + 1]
        named = set(re.findall(r"\w+", expr)) - {"not", "and", "or"}
        assert named <= registered, f"markers {named - registered} are not registered"


def extras() -> set[str]:
    return set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
               ["optional-dependencies"])


def check_pip(argv: list[str]) -> None:
    assert argv[1] == "install", argv
    for a in argv[2:]:
        m = re.fullmatch(r"(?:-e\s*)?\.(?:\[([\w,-]+)\])?", a)
        if a == "-e" or m is None:
            continue
        named = set((m.group(1) or "").split(",")) - {""}
        assert named <= extras(), f"extras {named - extras()} are not in pyproject.toml"


@pytest.mark.parametrize("block", [b for b in RUN if CODE[b.lang] == "bash"], ids=lambda b: b.id)
def test_bash_block(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ran = 0
    for k, argv in commands(block.text):
        where = f"{block.id}+{k}: {' '.join(argv)}"
        for is_and, group in itertools.groupby(argv, key=lambda a: a == "&&"):
            if is_and:
                continue
            part = list(group)
            while part and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", part[0]):  # VAR=value cmd
                name, _, value = part.pop(0).partition("=")
                monkeypatch.setenv(name, value)
            if part[:3] == ["python", "-m", "pytest"]:
                check_pytest(part)
            elif part[0] == "python":
                run_python(part, monkeypatch)
            elif part[0] == "pip":
                check_pip(part)
            elif part[0] == "bash":
                assert (REPO / part[1]).is_file(), where
            elif part[0] == "cd":
                assert (REPO / part[1]).is_dir(), where
            else:
                pytest.fail(f"{where}: cannot be checked; mark the block '<!-- not run: ... -->'")
            ran += 1
    assert ran, f"{block.id}: no command"


# ------------------------------------------------------------------------------ the pages

COMMANDS = [["train.py"], ["evaluate.py"], ["-m", "automedsam_jax.predict"], ["-m", "convert"],
            ["-m", "automedsam_jax.boxdemo"], ["-m", "automedsam_jax.data.brats_sample"],
            *[[f"benchmarks/{p.name}"] for p in sorted((REPO / "benchmarks").glob("*.py"))
              if "__main__" in p.read_text()]]
OTHER_TOOLS = {"--fast",  # TotalSegmentator's
               "--command", "--worker", "--zone", "--nodes", "--ntasks-per-node",  # gcloud, srun
               "--flag", "--no-flag"}  # the pattern of boolean options


def test_every_option_named_in_the_prose_exists(monkeypatch, tmp_path):
    """An option named anywhere on a page (prose and tables too) is in some command's --help."""
    monkeypatch.chdir(tmp_path)
    helps = "\n".join(run_python(["python", *c, "--help"], monkeypatch) for c in COMMANDS)
    known = set(re.findall(r"--[a-z][a-z0-9-]*", helps)) | OTHER_TOOLS
    # (an XLA flag, --xla_..., has underscores: not an option of ours)
    named = {f: p.name for p in PAGES for f in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*(?![\w])",
                                                         p.read_text())}
    assert not {f: page for f, page in named.items() if f not in known}


@pytest.mark.parametrize("block", [b for b in ALL if b.lang == "json"], ids=lambda b: b.id)
def test_json_block_parses(block):
    json.loads(block.text)


def test_readme_is_short():
    n = len((REPO / "README.md").read_text().splitlines())
    assert n <= 250, f"README.md has {n} lines"


def test_every_docs_page_linked_from_readme():
    readme = (REPO / "README.md").read_text()
    missing = [p.name for p in PAGES[1:] if f"](docs/{p.name})" not in readme]
    assert not missing


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_exist(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve()
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(target)
    assert not broken


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+\s+(.*)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S),
                       flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_parser_of_this_test():
    """The harness itself: continuation lines, comments, markers."""
    assert commands("python a.py --x 1 \\\n    --y 2   # c\n\n# only\npip install .\n") == [
        (0, ["python", "a.py", "--x", "1", "--y", "2"]), (4, ["pip", "install", "."])]
    with pytest.raises(AssertionError):
        check_pip(["pip", "install", "-e", ".[nosuchextra]"])


@pytest.mark.parametrize("argv", [["python", "train.py", "--no-such-flag"],
                                  ["python", "train.py", "--epochs", "many"],
                                  ["python", "-m", "automedsam_jax.predict", "x.png", "--nosuch"],
                                  ["python", "benchmarks/eval_speed.py", "--no-such-flag"]],
                         ids=["simple-parsing", "bad-value", "module", "argparse"])
def test_harness_refuses_bad_options(argv, tmp_path, monkeypatch):
    """The harness fails a command whose options do not parse, and passes a good one."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AssertionError):
        run_python(argv, monkeypatch)
    run_python(argv[:-1] if argv[-1].startswith("--") else argv[:-2], monkeypatch)


def test_harness_refuses_unchecked_lines(tmp_path, monkeypatch):
    """A shell line the harness cannot check fails its (unmarked) block; so does a missing file."""
    for text in ("git pull\n", "bash benchmarks/no_such.sh\n", "python no_such.py --x 1\n"):
        block = Block(REPO / "README.md", 1, "bash", text, None)
        with pytest.raises((pytest.fail.Exception, AssertionError)):
            test_bash_block(block, tmp_path, monkeypatch)
