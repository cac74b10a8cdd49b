"""The README and docs/ stay true: links resolve, the first screen holds the two commands,
generated parts match their sources, and the try-it example shows what is really printed."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from conftest import run_cli
from speech import ALSA

from sttwatch import configdoc
from sttwatch.config import AUDIO_PATTERNS
from sttwatch.exitcodes import ExitCode

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
INSTALL_AND_RUN = ("python3 -m venv .venv && .venv/bin/pip install -e '.[local]' && "
                   ".venv/bin/sttwatch run --config config.example.yaml")
TEST_COMMAND = "bash scripts/test.sh"
FIRST_SCREEN = 40  # lines


def _prose(text: str) -> str:
    """Markdown without its fenced code blocks (a link-like string in code is not a link)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def _links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", _prose(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_relative_link_points_to_a_file(page: Path) -> None:
    broken = []
    for link in _links(page):
        if re.match(r"^[a-z]+:", link) or link.startswith("#"):
            continue
        target = (page.parent / link.split("#", 1)[0]).resolve()
        if not target.exists():
            broken.append(link)
    assert broken == []


def test_the_docs_named_in_the_brief_exist_and_the_readme_links_them() -> None:
    names = {p.name for p in DOCS}
    wanted = {"configuration.md", "service.md", "operations.md", "benchmarks.md",
              "reliability.md", "architecture.md"}
    assert wanted <= names
    linked = {Path(link.split("#")[0]).name for link in _links(README)}
    assert wanted <= linked
    assert (ROOT / "LICENSE").is_file() and "MIT" in (ROOT / "LICENSE").read_text()


def test_the_first_screen_holds_the_two_commands() -> None:
    first = "\n".join(README.read_text(encoding="utf-8").splitlines()[:FIRST_SCREEN])
    assert INSTALL_AND_RUN in first
    assert TEST_COMMAND in first


def test_the_two_commands_refer_to_what_exists() -> None:
    assert "local" in (metadata.metadata("sttwatch").get_all("Provides-Extra") or [])
    scripts = {e.name: e.value for e in metadata.entry_points(group="console_scripts")}
    assert scripts["sttwatch"] == "sttwatch.cli:main"
    assert (ROOT / "config.example.yaml").is_file() and (ROOT / "scripts" / "test.sh").is_file()


def test_the_readme_lists_the_accepted_file_types() -> None:
    text = " ".join(README.read_text(encoding="utf-8").split())
    listed = re.search(r"Accepted files: `([^`]+)`", text)
    assert listed is not None
    assert listed.group(1).split() == [p.removeprefix("*") for p in AUDIO_PATTERNS]


def test_the_readme_names_every_exit_status_a_script_may_see() -> None:
    text = " ".join(README.read_text(encoding="utf-8").split())
    line = re.search(r"lists the exit statuses \(([^)]*)\)", text)
    assert line is not None
    assert [int(n) for n in re.findall(r"\b(\d+) ", line.group(1))] == [
        int(c) for c in ExitCode if c < 100]


def test_generated_parts_of_the_docs_are_up_to_date() -> None:
    assert configdoc.stale(ROOT) == [], f"run {configdoc.REGENERATE}"
    ops = (ROOT / configdoc.OPERATIONS_PATH).read_text(encoding="utf-8")
    assert configdoc.with_exit_statuses(ops) == ops


@pytest.mark.model
def test_the_try_it_example_shows_what_is_printed() -> None:
    """The README's `cat inbox/Front_Center.txt` line names what the local engine prints."""
    shown = next(line for line in README.read_text(encoding="utf-8").splitlines()
                 if line.startswith("cat inbox/Front_Center.txt"))
    r = run_cli("transcribe", "--backend", "local", str(ALSA / "Front_Center.wav"), env={})
    assert r.code == 0, r.err
    printed = r.out.strip()
    assert printed in shown.split("#", 1)[1], (printed, shown)
