"""Every command and output shown in the README and docs/ is run, so they cannot drift from what u2eval does.

In a document, a ```bash block is run line by line (a trailing backslash continues a line) in the document's
own sandbox, a fresh folder that earlier blocks of the same document have written to; a ```python block is run
whole there by the Python of the install; the ```output block
that follows it lists lines its output must show, in that order (``…`` stands for any lines). A block that
cannot run here (it needs a GPU, a provider's own endpoint, a package outside the dev install) is preceded by
``<!-- not run: why -->``, and the reason is checked to be there. Everything else runs against local stand-ins:
the OpenAI-compatible server for OpenAI (OPENAI_BASE_URL), a Hugging Face hub stand-in serving the bundled
sample (HF_ENDPOINT), as a user's machine would reach the real ones.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from anthropic_server import AnthropicServer
from google_server import GoogleServer
from hub_server import HubServer
from judge_standin import judge_answer
from openai_server import OpenAIServer

from u2eval.resources import sample_dir

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KEY = "sk-docs-not-a-real-key"
_FENCE = re.compile(r"^```(\w*)\s*$")
_NOT_RUN = re.compile(r"^<!-- not run: (.+?) -->\s*$")
ELLIPSIS = "…"


@dataclass(frozen=True)
class Block:
    line: int  # where the block starts in its document (1-based)
    kind: str  # bash, output, python, yaml, text, ...
    text: str
    not_run: str | None  # why it is not run, when it is not


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        j = i - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        reason = _NOT_RUN.match(lines[j]) if j >= 0 else None
        end = next(k for k in range(i + 1, len(lines)) if lines[k].startswith("```"))
        found.append(Block(i + 1, fence.group(1), "\n".join(lines[i + 1 : end]), reason.group(1) if reason else None))
        i = end + 1
    return found


def commands(text: str) -> list[str]:
    """The command lines of a bash block, continuations joined, comments and blanks dropped."""
    joined: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = pending + raw
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        if line.strip() and not line.lstrip().startswith("#"):
            joined.append(line)
    return joined


def expected_lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def _within(want: str, line: str) -> bool:
    """``want`` is in ``line``; a ``…`` inside it stands for any text there (a port, a path)."""
    at = 0
    for part in want.split(ELLIPSIS):
        found = line.find(part.strip(), at)
        if found < 0:
            return False
        at = found + len(part.strip())
    return True


def shows(output: str, expected: list[str]) -> str | None:
    """None when ``output`` shows the expected lines in order (each within one output line; a line ``…`` =
    any lines, a ``…`` inside a line = any text), else the first line it does not show."""
    lines = [line.rstrip() for line in output.splitlines()]
    position = 0
    for want in expected:
        if want == ELLIPSIS:
            continue
        while position < len(lines) and not _within(want, lines[position]):
            position += 1
        if position == len(lines):
            return want
        position += 1
    return None


@pytest.fixture(scope="module")
def stand_ins() -> Iterator[dict[str, str]]:
    """The services a user's commands would reach: OpenAI, Anthropic and Google endpoints, the Hugging Face hub."""
    models = ("gpt-4o-2024-08-06", "gpt-4o-mini-2024-07-18", "gpt-5-2025-08-07")
    # It answers u2eval's judge prompts as the judge stand-in does (anything else: "benign", as before).
    openai = OpenAIServer(api_key=KEY, models=models, answer=judge_answer).start()
    # The providers know the models the docs name (retired ones excepted, as the real APIs do).
    anthropic = AnthropicServer(KEY, known_models={"claude-3-7-sonnet-20250219", "claude-sonnet-4-5-20250929"}).start()
    gemini = {"gemini-2.5-pro-preview-03-25", "gemini-2.5-flash", "gemini-2.5-pro"}
    google = GoogleServer(KEY, known_models=gemini).start()
    hub = HubServer(sample_dir()).start()
    try:
        yield {
            "OPENAI_BASE_URL": openai.url,
            "ANTHROPIC_BASE_URL": anthropic.url,
            "GOOGLE_GEMINI_BASE_URL": google.url,
            "HF_ENDPOINT": hub.url,
        }
    finally:
        for server in (openai, anthropic, google, hub):
            server.stop()


def _sandbox_env(folder: Path, stand_ins: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "HF_", "ANTHROPIC_", "GOOGLE_"))}
    env |= stand_ins
    env |= {
        "OPENAI_API_KEY": KEY,
        "ANTHROPIC_API_KEY": KEY,
        "GEMINI_API_KEY": KEY,
        "HF_HOME": str(folder / ".hf"),
        "COLUMNS": "200",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    }
    return env


@pytest.mark.parametrize("document", DOCUMENTS, ids=[p.relative_to(ROOT).as_posix() for p in DOCUMENTS])
def test_the_commands_and_outputs_a_document_shows_are_what_u2eval_does(
    document: Path, tmp_path: Path, stand_ins: dict[str, str]
) -> None:
    found = blocks(document)
    env = _sandbox_env(tmp_path, stand_ins)
    shutil.copytree(sample_dir(), tmp_path / "sample-copy")  # a local folder in the layout, for `--data DIR`
    last_output: str | None = None
    for block in found:
        where = f"{document.relative_to(ROOT)}:{block.line}"
        if block.not_run is not None:
            assert len(block.not_run) > 10, f"{where}: say why the block is not run"
            last_output = None
            continue
        if block.kind == "output":
            assert last_output is not None, f"{where}: an output block must follow a block that runs"
            missing = shows(last_output, expected_lines(block.text))
            assert missing is None, f"{where}: the output does not show {missing!r}:\n{last_output[-4000:]}"
            continue
        if block.kind == "python":
            done = subprocess.run(
                [sys.executable, "-c", block.text], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, f"{where}: the Python block failed:\n{done.stderr[-3000:]}"
            last_output = done.stdout + done.stderr
            continue
        if block.kind != "bash":
            last_output = None
            continue
        outputs = []
        for command in commands(block.text):
            if command.startswith("pip install"):  # the test runs inside the install it describes
                command = command.partition("&&")[2].strip()
            if command in ("", "pytest"):
                continue  # (and the tests are what runs this)
            export = re.match(r"^export (\w+)=(\S*)", command)
            if export is not None:  # the block's later commands see it, as in a shell
                if "..." not in export.group(2):  # 'sk-...' stands for the reader's own key: the stand-in's here
                    env[export.group(1)] = export.group(2)
                continue
            status = re.search(r"#\s*exits? (\d+)\s*$", command)
            done = subprocess.run(
                ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
            )
            wanted = int(status.group(1)) if status else 0
            assert done.returncode == wanted, (
                f"{where}: `{command}` exited {done.returncode}, not {wanted}:\n{done.stderr[-3000:]}"
            )
            outputs.append(done.stdout + done.stderr)
        last_output = "\n".join(outputs)


def test_the_output_check_wants_the_lines_in_order_and_each_within_one_line() -> None:
    output = "error: a: refused (auth): http://127.0.0.1:5/v1: 401 bad key\nrun folder: x"
    assert shows(output, ["refused (auth): … 401 bad key", "…", "run folder"]) is None
    assert shows(output, ["run folder", "refused"]) == "refused"  # order matters
    assert shows(output, ["401 … refused"]) == "401 … refused"  # and inside a line too
    assert shows(output, ["bad key run folder"]) == "bad key run folder"  # one line each
