"""The response store: durable appends, resume semantics, a cut last line, key sensitivity."""

from __future__ import annotations

from pathlib import Path

from u2eval.records import Completion, GenerationConfig, ImagePart, ModelInfo, Prompt, TextPart
from u2eval.store import RESPONSES_FILE, ResponseStore, request_key


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
