"""The response store: durable appends, resume semantics, a cut last line, key sensitivity."""

from __future__ import annotations

from pathlib import Path

from u2eval.records import Completion, GenerationConfig, ImagePart, ModelInfo, Prompt, TextPart
from u2eval.run.store import RESPONSES_FILE, ResponseStore, request_key


def _prompt(text: str = "which sector?", image: bytes = b"\x89PNG fake") -> Prompt:
    return Prompt(
        case_id="ll/04/0/abcd",
        system=None,
        parts=(ImagePart(data=image, media_type="image/png"), TextPart(text)),
        template="ll:ours",
        template_sha256="0" * 64,
    )


MODEL = ModelInfo(adapter="random", model="random-guess", revision="seed-0")


def test_key_changes_with_everything_the_model_sees() -> None:
    base = request_key(MODEL, GenerationConfig(), _prompt())
    assert base == request_key(MODEL, GenerationConfig(), _prompt())
    assert base != request_key(MODEL, GenerationConfig(), _prompt(text="which sector?!"))
    assert base != request_key(MODEL, GenerationConfig(), _prompt(image=b"\x89PNG other"))
    assert base != request_key(MODEL, GenerationConfig(temperature=0.7), _prompt())
    assert base != request_key(MODEL.model_copy(update={"revision": "seed-1"}), GenerationConfig(), _prompt())


def test_known_digest_is_used_instead_of_rehashing() -> None:
    import hashlib

    data = b"image bytes"
    plain = Prompt("c", None, (ImagePart(data, "image/png"),), "t", "")
    known = Prompt("c", None, (ImagePart(data, "image/png", sha256=hashlib.sha256(data).hexdigest()),), "t", "")
    assert plain.fingerprint() == known.fingerprint()


def test_append_then_reopen_and_latest_wins(tmp_path: Path) -> None:
    with ResponseStore(tmp_path) as store:
        store.append([Completion(case_id="a", key="k1", error="rate_limit", error_message="429")])
        store.append([Completion(case_id="b", key="k2", text="center")])
        assert not store.answered("k1")
        assert store.answered("k2")
        store.append([Completion(case_id="a", key="k1", text="upper left", attempts=2)])
    reopened = ResponseStore(tmp_path)
    assert len(reopened) == 2
    assert reopened.answered("k1")
    first = reopened.get("k1")
    assert first is not None and first.text == "upper left" and first.attempts == 2


def test_line_cut_mid_write_is_skipped_and_the_file_stays_appendable(tmp_path: Path) -> None:
    with ResponseStore(tmp_path) as store:
        store.append([Completion(case_id="a", key="k1", text="center")])
    path = tmp_path / RESPONSES_FILE
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"case_id": "b", "key": "k2", "te')  # killed mid-line
    store = ResponseStore(tmp_path)
    assert store.skipped_lines == [2]
    assert store.answered("k1") and not store.answered("k2")
    store.append([Completion(case_id="b", key="k2", text="lower left")])
    store.close()
    again = ResponseStore(tmp_path)
    assert again.answered("k2") and again.skipped_lines == [2]


def test_refused_and_empty_are_answers_not_infra(tmp_path: Path) -> None:
    with ResponseStore(tmp_path) as store:
        store.append(
            [
                Completion(case_id="a", key="k1", error="refused"),
                Completion(case_id="b", key="k2", error="timeout"),
            ]
        )
        assert store.answered("k1")
        assert not store.answered("k2")


def test_an_append_that_fails_is_cut_back_and_counts_as_nothing(tmp_path: Path) -> None:
    """A full disk mid-append (here a file-size limit, in a process of its own): the file is cut back to
    its last whole line, the error names the file, and only what is on disk counts as stored."""
    import subprocess
    import sys

    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from u2eval.records import Completion\n"
        "from u2eval.run.store import ResponseStore\n"
        "store = ResponseStore(Path(sys.argv[1]))\n"
        "store.append([Completion(case_id='a', key='k1', text='x' * 100)])\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))\n"
        "try:\n"
        "    store.append([Completion(case_id='b', key='k2', text='y' * 100),\n"
        "                  Completion(case_id='c', key='k3', text='z' * 100)])\n"
        "except OSError as exc:\n"
        "    print(exc.errno, exc.filename, store.answered('k1'), store.answered('k2'), store.answered('k3'))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["27", str(tmp_path / RESPONSES_FILE), "True", "False", "False"]
    lines = (tmp_path / RESPONSES_FILE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and '"k1"' in lines[0]  # the partial write of k2 is gone
    again = ResponseStore(tmp_path)
    assert again.skipped_lines == [] and again.answered("k1") and not again.answered("k2")


def test_a_line_cut_inside_a_multibyte_character_is_skipped_alone(tmp_path: Path) -> None:
    with ResponseStore(tmp_path) as store:
        store.append([Completion(case_id="a", key="k1", text="µm")])
    path = tmp_path / RESPONSES_FILE
    line = Completion(case_id="b", key="k2", text="结节 µm").model_dump_json().encode()
    with path.open("ab") as handle:
        handle.write(line[: line.index("µ".encode()) + 1])  # killed between the two bytes of 'µ'
    store = ResponseStore(tmp_path)
    assert store.skipped_lines == [2] and store.answered("k1") and not store.answered("k2")
