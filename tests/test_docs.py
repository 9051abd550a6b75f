"""The course site: it builds with ``mkdocs build --strict``, needs no network, and its commands exist.

Every command line in backticks (inline or in a code block) that runs one of the kit's CLIs,
directly (``python -m engine_core ...``) or through nox (``nox -s serve -- ...``), may use only
options that the CLI's ``--help`` lists; every ``nox -s NAME`` must be a session of noxfile.py.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import assignments
from autograder.docs_nav import assignment_nav

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Command prefix (as written in the docs) -> the module whose --help lists its options.
COMMANDS = {
    "python -m engine_core": "engine_core",
    "nox -s serve --": "engine_core",
    "python -m benchmark.bench_serving": "benchmark.bench_serving",
    "nox -s bench_serving --": "benchmark.bench_serving",
    "python -m benchmark.bench_accuracy": "benchmark.bench_accuracy",
    "nox -s bench_accuracy --": "benchmark.bench_accuracy",
    "python -m benchmark.bench_engine": "benchmark.bench_engine",
    "nox -s bench_engine --": "benchmark.bench_engine",
    "python -m benchmark.gpu_serving": "benchmark.gpu_serving",
    "python -m benchmark.gpu_report": "benchmark.gpu_report",
    "python -m benchmark.profile_decode": "benchmark.profile_decode",
    "python -m autograder.grade": "autograder.grade",
    "nox -s grade --": "autograder.grade",
    "python -m autograder.gradescope": "autograder.gradescope",
    "nox -s gradescope --": "autograder.gradescope",
    "python -m autograder.publish": "autograder.publish",
}


# ---- the build ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install '.[docs]')")
    pytest.importorskip("material", reason="mkdocs-material is not installed (pip install '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


def test_site_builds_strict_with_every_page(site):
    handouts = [f"assignments/{name}.html" for name in assignments.names()]
    assert "assignments/a1.html" in handouts
    for page in ["index.html", "setup.html", "architecture.html", "grading.html", *handouts]:
        assert (site / page).is_file(), page
    assert (site / "search" / "search_index.js").is_file(), "the offline plugin inlines the search index"


_ASSET_TAG = re.compile(r"<(link|script)\b[^>]*>", re.IGNORECASE)
_ASSET_URL = re.compile(r"""\b(?:href|src)\s*=\s*["']?\s*((?:https?:)?//[^"'\s>]+)""", re.IGNORECASE)


def test_built_pages_load_nothing_from_the_network(site):
    pages = sorted(site.rglob("*.html"))
    assert pages
    for page in pages:
        html = page.read_text(encoding="utf-8")
        rel = page.relative_to(site)
        assert "fonts.googleapis.com" not in html and "fonts.gstatic.com" not in html, rel
        for tag in _ASSET_TAG.finditer(html):
            url = _ASSET_URL.search(tag.group(0))
            assert url is None, f"{rel}: {tag.group(0)} loads {url.group(1)}"


def test_no_mermaid_and_no_external_images_in_the_sources():
    for path in sorted(DOCS.rglob("*")):
        if path.suffix not in (".md", ".svg"):
            continue
        text = path.read_text(encoding="utf-8")
        assert "```mermaid" not in text, f"{path}: mermaid loads from a CDN"
        assert not re.search(r"!\[[^\]]*\]\(\s*(?:https?:)?//", text), f"{path}: an image from the network"
        if path.suffix == ".svg":
            assert not re.search(r"""(?:href|src)\s*=\s*["'](?:https?:)?//""", text), f"{path}: external reference"


# ---- the commands the docs show ------------------------------------------------------------

def _code_lines(text: str) -> list[str]:
    """Every line of every fenced code block and every inline code span, continuations joined."""
    lines: list[str] = []
    fence: str | None = None
    block: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        marker = re.match(r"(`{3,}|~{3,})", stripped)
        if fence is None and marker:
            fence, block = marker.group(1), []
            continue
        if fence is not None:
            if stripped.startswith(fence) and stripped.strip("`~") == "":
                lines += _join_continuations(block)
                fence = None
            else:
                block.append(line)
            continue
        lines += re.findall(r"(?<!`)`([^`\n]+)`(?!`)", line)
    return lines


def _join_continuations(block: list[str]) -> list[str]:
    joined: list[str] = []
    current = ""
    for line in block:
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
        else:
            joined.append(current + line)
            current = ""
    if current:
        joined.append(current)
    return joined


def _strip_comment(line: str) -> str:
    return re.split(r"\s+#\s", " " + line, maxsplit=1)[0].strip()


def documented_commands() -> list[tuple[str, str, str]]:
    """(page, prefix, the command's arguments after the prefix) for every documented CLI call."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        for raw in _code_lines(page.read_text(encoding="utf-8")):
            line = _strip_comment(raw.strip().removeprefix("$ "))
            # Several commands on one line: `a && b`, `a; b`.
            for command in re.split(r"\s*(?:&&|;|\|\|)\s*", line):
                for prefix in COMMANDS:
                    if command == prefix or command.startswith(prefix + " "):
                        found.append((page.relative_to(DOCS).as_posix(), prefix, command[len(prefix):].strip()))
    return found


@functools.cache
def help_options(module: str) -> frozenset[str]:
    """The option strings that ``python -m <module> --help`` lists (run once per module)."""
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, f"python -m {module} --help failed:\n{done.stderr}"
    options = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", done.stdout))
    # --flag / --no-flag pairs (BooleanOptionalAction) print as "--flag, --no-flag".
    return frozenset(options)


def _options_used(args: str) -> list[str]:
    try:
        tokens = shlex.split(args)
    except ValueError:
        tokens = args.split()
    return [t.split("=", 1)[0] for t in tokens if t.startswith("-") and not re.fullmatch(r"-\d[\d.]*", t)]


def test_the_docs_show_engine_core_commands():
    prefixes = {prefix for _, prefix, _ in documented_commands()}
    assert "python -m engine_core" in prefixes
    assert "nox -s serve --" in prefixes


def test_engine_core_commands_use_only_options_of_its_help():
    known = help_options("engine_core")
    bad = [f"{page}: `python -m engine_core {args}` uses {opt}"
           for page, prefix, args in documented_commands() if prefix == "python -m engine_core"
           for opt in _options_used(args) if opt not in known]
    assert not bad, "\n".join(bad)


def test_every_documented_cli_call_uses_only_options_of_its_help():
    bad = []
    for page, prefix, args in documented_commands():
        if prefix.startswith("nox -s serve"):
            words = args.split()
            if words and assignments.is_name(words[0]):
                args = " ".join(words[1:])  # the noxfile turns `a1` into `--scheduler a1`
        known = help_options(COMMANDS[prefix])
        bad += [f"{page}: `{prefix} {args}` uses {opt}, which `python -m {COMMANDS[prefix]} --help` does not list"
                for opt in _options_used(args) if opt not in known]
    assert not bad, "\n".join(bad)


# Options of other tools (pip) that the docs name on their own, in inline code.
OTHER_TOOLS_OPTIONS = {"--no-deps", "--python-version", "--platform", "--only-binary", "--index-url", "--no-index",
                       "--find-links"}


def test_options_named_on_their_own_exist():
    """An inline `--option` (like `--kv-cache-memory-gb`) must be an option of one of the kit's CLIs."""
    known = set(OTHER_TOOLS_OPTIONS)
    for module in set(COMMANDS.values()):
        known |= help_options(module)
    bad = []
    for page in sorted(DOCS.rglob("*.md")):
        for line in page.read_text(encoding="utf-8").splitlines():
            for span in re.findall(r"(?<!`)`(--[^`\n]+)`(?!`)", line):
                bad += [f"{page.relative_to(DOCS)}: `{span}` names {opt}" for opt in _options_used(span)
                        if opt not in known]
    assert not bad, "\n".join(bad)


def nox_sessions() -> set[str]:
    """Session names of noxfile.py: functions decorated with @nox.session (or its name=...)."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            call = deco if isinstance(deco, ast.Call) else None
            target = call.func if call else deco
            if isinstance(target, ast.Attribute) and target.attr == "session":
                name = node.name
                for kw in call.keywords if call else []:
                    if kw.arg == "name" and isinstance(kw.value, ast.Constant):
                        name = kw.value.value
                names.add(name)
    return names


def test_every_documented_nox_session_exists():
    sessions = nox_sessions()
    missing = set()
    for page in sorted(DOCS.rglob("*.md")):
        for line in _code_lines(page.read_text(encoding="utf-8")):
            for name in re.findall(r"\bnox -s ([\w-]+)", line):
                if name not in sessions:
                    missing.add(f"{page.relative_to(DOCS)}: nox -s {name}")
    assert not missing, "sessions the docs use but noxfile.py lacks:\n" + "\n".join(sorted(missing))


def test_command_extraction_finds_inline_and_fenced_commands():
    text = (
        "Run `python -m engine_core --port 0` here.\n\n"
        "```bash\n"
        "python -m engine_core \\\n  --model random:tiny   # a comment --not-an-option\n"
        "cd x && nox -s serve -- a1 --max-num-seqs 8\n"
        "```\n"
    )
    lines = _code_lines(text)
    assert "python -m engine_core --port 0" in lines
    joined = [_strip_comment(line) for line in lines]
    assert any(line.startswith("python -m engine_core") and "--model random:tiny" in line for line in joined)
    assert not any("--not-an-option" in line for line in joined)
    assert _options_used("--impl=solution --port 0 -h --kv-cache-memory-gb 0.5") == ["--impl", "--port", "-h",
                                                                                      "--kv-cache-memory-gb"]


def test_every_assignment_has_a_handout_in_the_nav():
    """The Assignments section lists each assignment's handout, in course order, by its title."""
    nav = assignment_nav(DOCS)
    assert [next(iter(entry.values())) for entry in nav] == [f"assignments/{n}.md" for n in assignments.names()]
    assert next(iter(nav[1])) == "a1: continuous batching"
