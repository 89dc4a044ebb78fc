"""Every command shown in a code block of README.md and docs/ parses as the CLI would take it: `skr` commands
through the real argument parser and, where their arguments are config keys, through the config loader (an
unknown key fails); `make` targets exist; benchmark scripts exist and accept the flags shown. So the docs
cannot drift from the CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


COMMAND = re.compile(r"^(\.venv/bin/)?skr\s|^make\s|^python\s+benchmarks/")


def is_inline_command(span: str) -> bool:
    """An inline code span that is a whole command, not a usage pattern (`skr submit STAGE`, `[-c FILE]`) or a
    bare command name in prose."""
    span = span.strip()
    return bool(COMMAND.match(span)) and not re.search(r"[|\[]|\.\.\.|\b[A-Z][A-Z_]{2,}\b", span) and (
        len(span.split()) > 2 or not span.startswith(("skr", ".venv")))


def code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, command) of every command in the file's shell code blocks (continuations joined) and in
    its inline code spans."""
    out, inside, shell, pending, start = [], False, False, "", 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip().startswith("```"):
            inside, shell = not inside, line.strip()[3:] in ("", "bash", "sh", "shell")
            continue
        if not inside:
            out += [(number, span.strip()) for span in re.findall(r"`([^`]+)`", line) if is_inline_command(span)]
            continue
        if not shell:
            continue
        if pending:
            pending += " " + line.strip()
        else:
            pending, start = line.strip(), number
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        for part in re.split(r"\s*(?:;|&&)\s*", pending):
            part = re.sub(r"\s+#.*$", "", part).strip()
            if COMMAND.match(part):
                out.append((start, part))
        pending = ""
    return out


COMMANDS = [(f"{p.relative_to(REPO)}:{n}", c) for p in DOCS for n, c in code_lines(p)]


def test_the_docs_show_commands_of_every_kind():
    kinds = {c.split()[0].split("/")[-1] for _, c in COMMANDS}
    assert {"skr", "make", "python"} <= kinds and len(COMMANDS) > 30


@pytest.mark.parametrize("where,command", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_command_parses(where, command):
    from skr_ray.cli import CONFIG_COMMANDS, build_parser
    from skr_ray.config import load_config

    words = shlex.split(command)
    if words[0] == "make":
        targets = re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.M)
        assert all(w in targets for w in words[1:] if "=" not in w), f"{where}: no make target in {command}"
        return
    if words[0] == "python":
        script = REPO / words[1]
        assert script.is_file(), f"{where}: {words[1]} does not exist"
        source = script.read_text()
        for flag in (w.split("=")[0] for w in words[2:] if w.startswith("--")):
            assert f'"{flag}"' in source, f"{where}: {words[1]} takes no {flag}"
        return
    words = words[1:]
    if "|" in words[0]:  # a usage line such as `skr annotate|train|evaluate|run ...`
        return
    args = build_parser().parse_intermixed_args(words)
    for config in args.config or []:
        assert (REPO / config).is_file(), f"{where}: config file {config} does not exist"
    if args.command in CONFIG_COMMANDS:
        load_config([REPO / c for c in args.config or []], args.overrides)  # unknown keys raise ConfigError
    elif args.command == "submit":
        from skr_ray.jobs_client import STAGES

        assert args.overrides and args.overrides[0] in STAGES, f"{where}: submit needs a stage"
        load_config([REPO / c for c in args.config or []], args.overrides[1:])
    elif args.command == "serve":
        assert all("=" in m for m in args.model), f"{where}: --model takes ID=PATH"
    elif args.command == "compare":
        assert args.overrides, f"{where}: compare needs runs"
    elif args.command == "tiny-vlm":
        assert not args.overrides, f"{where}: tiny-vlm takes only --out"
    else:
        assert args.overrides, f"{where}: {args.command} needs a job id"


def _anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_the_docs_resolve_and_the_readme_stays_a_front_door():
    for path in DOCS:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            assert linked.exists(), f"{path.relative_to(REPO)} links to missing {target}"
            if anchor and linked.suffix == ".md":
                headings = {_anchor(h) for h in re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.M)}
                assert anchor in headings, f"{path.relative_to(REPO)} links to missing anchor {target}"
    readme = (REPO / "README.md").read_text()
    assert len(readme.encode()) < 8 * 1024
    for doc in DOCS[1:]:  # every document is reachable from the README
        assert str(doc.relative_to(REPO)) in readme, f"README does not link {doc.relative_to(REPO)}"
