"""Every relative link in README.md and docs/*.md points at a file that exists, and an `#anchor` into a Markdown
file at one of its headings (GitHub's heading ids), so that moving or renaming a page breaks a test, not a reader."""

import re
import shlex
from pathlib import Path

import pytest

from ablations import run
from ablations.sweep import plan
from convmixer.tweet import TWEET

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, ...


def prose(text: str) -> str:
    """The text without code blocks and code spans: a `[x](y)` inside code is an example, not a link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(page: Path) -> set[str]:
    """The ids GitHub gives the page's headings: lower case, punctuation dropped, spaces as hyphens, repeats -1, -2."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in HEADING.findall(FENCE.sub("", page.read_text())):  # code spans in headings count
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps only its text
        slug = re.sub(r"[^\w\- ]", "", text.replace("`", "").lower()).replace(" ", "-")
        ids.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return ids


def broken_links(page: Path) -> list[str]:
    problems = []
    for target in LINK.findall(prose(page.read_text())):
        if EXTERNAL.match(target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            problems.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            problems.append(f"{target}: no heading #{anchor} in {file.name}")
    return problems


def test_the_pages_exist():
    assert (ROOT / "README.md").exists() and len(PAGES) > 1


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_relative_links_resolve(page):
    assert broken_links(page) == []


def test_a_broken_link_and_a_broken_anchor_are_found(tmp_path):
    (tmp_path / "other.md").write_text("# A `code` heading: with punctuation\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#a-code-heading-with-punctuation) [ok](other.md#twice-1) [ok](#local) [web](https://x.org/y)\n"
        "`[in code](nowhere.md)`\n```\n[in a block](nowhere.md)\n```\n# Local\n"
        "[missing](nowhere.md) [bad anchor](other.md#thrice)\n"
    )
    assert broken_links(page) == ["nowhere.md: no such file", "other.md#thrice: no heading #thrice in other.md"]


def test_the_readme_stays_an_entrance_of_at_most_200_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200  # details go to docs/


def test_the_readme_quotes_the_tweet_verbatim():
    assert TWEET in (ROOT / "README.md").read_text()


def readme_commands(program: str) -> list[list[str]]:
    """The README's `python -m <program> ...` command lines in code blocks, continuation lines joined, split as a
    shell would (comments dropped)."""
    blocks = [match.group() for match in FENCE.finditer((ROOT / "README.md").read_text().replace("\\\n", " "))]
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line, comments=True) for line in lines if line.startswith(f"python -m {program} ")]


def test_the_readme_shows_the_real_data_commands():
    commands = [" ".join(argv) for argv in readme_commands("ablations.run")]
    assert any("--preset cifar10 " in command for command in commands)  # the download a user on the internet gets
    assert any("--preset cifar10-jpeg " in command and "data_root=" in command for command in commands)


@pytest.mark.parametrize("argv", readme_commands("ablations.run"), ids=" ".join)
def test_the_readmes_sweep_commands_are_accepted(argv, monkeypatch, capsys):
    """Every sweep the README shows parses and plans (a dry run), its data aside: CIFAR-10 is downloaded on first
    use, which a test must not do. A dry run writes nothing."""
    monkeypatch.chdir(ROOT)  # the README's commands run from the repository root
    monkeypatch.setattr(plan, "check_data", lambda configs, todo, store: {})
    assert run.main([*argv[3:], "--dry-run"]) == 0
    assert "to train" in capsys.readouterr().out


def python_blocks(page: Path, containing: str) -> list[str]:
    """The ```python blocks of a page that contain `containing`."""
    blocks = re.findall(r"^```python\n(.*?)^```", page.read_text(), re.MULTILINE | re.DOTALL)
    return [block for block in blocks if containing in block]


@pytest.mark.slow  # decodes 6,000 JPEGs the first time
def test_the_build_data_snippet_of_data_md_runs_and_gives_the_documented_shapes(cifar10_jpeg):
    (snippet,) = python_blocks(ROOT / "docs" / "data.md", "build_data(")
    names: dict = {}
    exec(snippet.replace("PATH/TO/cifar10-jpeg.tar.gz", str(cifar10_jpeg)), names)  # noqa: S102
    images, targets = names["images"], names["targets"]
    assert (tuple(images.shape), str(images.dtype)) == ((512, 3, 32, 32), "torch.float32")  # the snippet's comment
    assert (tuple(targets.shape), str(targets.dtype)) == ((512, 10), "torch.float32")
