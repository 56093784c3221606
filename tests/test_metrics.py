"""Metrics on hand-computed cases, goldens from the real pycocoevalcap, and Hypothesis properties."""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from u2eval.benchmark.tasks import get_task
from u2eval.records import Verdict
from u2eval.scoring import metrics as m
from u2eval.scoring import text_metrics as t

# The metrics are defined once, on verdicts (metrics.METRICS); these give them plain values to check against
# pycocoevalcap's and sklearn's outputs.
_LABELLED = get_task("dd").dataset("23")
_UNIT_RANGE = get_task("cve").dataset("18").model_copy(update={"value_range": (0.0, 1.0)})


def _on(name: str, truths: list[str], predictions: list[str]) -> float:
    pairs = zip(truths, predictions, strict=True)
    verdicts = [Verdict(prediction=p, truth=r, counted=True, correct=p == r) for r, p in pairs]
    return m.METRICS[name].compute(verdicts, _LABELLED)


def bleu4(hyps: list[str], refs: list[str]) -> float:
    return _on("bleu4", refs, hyps)


def rouge_l(hyps: list[str], refs: list[str]) -> float:
    return _on("rouge_l", refs, hyps)


def macro_f1(truth: list[str], pred: list[str], truth_classes: bool = False) -> float:
    return _on("macro_f1_truth_classes" if truth_classes else "macro_f1", truth, pred)


def accuracy(flags: list[bool]) -> float:
    verdicts = [Verdict(prediction="a", truth="a", counted=True, correct=f) for f in flags]
    return m.METRICS["accuracy"].compute(verdicts, _LABELLED)


def on_errors(name: str, errors: list[float]) -> float:
    """The CVE metric over these normalised errors (truth e, prediction 0, range [0, 1])."""
    verdicts = [Verdict(prediction=0.0, truth=e, counted=True) for e in errors]
    return m.METRICS[name].compute(verdicts, _UNIT_RANGE)


# Computed once with pycocoevalcap 1.2 (Bleu(4).compute_score, Rouge().compute_score; BLEU-4 and ROUGE-L
# x 100), ids "0", "1", ... in list order. pycocoevalcap is not a dependency: these are its outputs.
PYCOCO_GOLDEN = {
    "identical": (
        ["the liver is normal in size and echotexture", "no focal lesion is seen in the gallbladder"],
        ["the liver is normal in size and echotexture", "no focal lesion is seen in the gallbladder"],
        99.99999998581846,
        100.0,
    ),
    "punctuation_attached": (
        ["The liver is normal in size."],
        ["The liver is normal in size and echotexture."],
        54.444605944062275,
        69.63470319634702,
    ),
    "no_4gram": (
        ["liver normal size gallbladder"],
        ["normal liver size and gallbladder wall"],
        2.1792895989844462e-10,
        57.91139240506329,
    ),
    "brevity": (
        ["the liver is normal", "gallbladder wall is thin and smooth"],
        ["the liver is normal in size and shape with smooth borders", "gallbladder wall is thin and smooth"],
        49.65853036620907,
        74.59677419354838,
    ),
    "empty_hypothesis": (
        ["", "fetal phantom ultrasound image showing standard plane for AC measurement"],
        [
            "Fetal phantom ultrasound image showing standard diagnostic plane for AC measurement",
            "fetal phantom ultrasound image showing standard plane for BPD measurement",
        ],
        26.04857000668349,
        45.0,
    ),
    "whitespace": (
        ["the  liver is\nnormal in size", "spleen normal"],
        ["the liver is normal in size", "spleen  is normal"],
        84.31753044272898,
        64.77663230240549,
    ),
    "longer_than_ref": (
        ["the liver is normal in size and echotexture with no focal lesion and the spleen is normal"],
        ["the liver is normal in size"],
        28.175950488572177,
        57.09828393135725,
    ),
}


@pytest.mark.parametrize("name", sorted(PYCOCO_GOLDEN))
def test_bleu4_and_rouge_l_match_pycocoevalcap(name: str) -> None:
    hyps, refs, bleu, rouge = PYCOCO_GOLDEN[name]
    assert bleu4(hyps, refs) == pytest.approx(bleu, rel=1e-12)
    assert rouge_l(hyps, refs) == pytest.approx(rouge, rel=1e-12)


def test_bleu_closest_reference_length_breaks_ties_towards_the_shorter() -> None:
    # 4 tokens against references of 7, 3 and 5: 3 and 5 are both 1 away; pycocoevalcap picks 3, so no
    # brevity penalty (golden 99.99999994791672). Picking 5 would give exp(1 - 5/4) ~ 0.78.
    stats = t.bleu_stats("a b c d", ["a b c d e f g", "a b c", "a b c d e"])
    assert stats.ref_len == 3
    assert t.corpus_bleu([stats]) == pytest.approx(99.99999994791672, rel=1e-12)
    assert t.rouge_l_case("a b c d", ["a b c d e f g", "a b c", "a b c d e"]) == 1.0


def test_bleu_is_corpus_level_not_a_mean_of_sentences() -> None:
    hyps = ["a b c d e f", "x y"]
    refs = ["a b c d e f", "p q"]
    per_sentence_mean = (bleu4(hyps[:1], refs[:1]) + bleu4(hyps[1:], refs[1:])) / 2
    stats = [t.bleu_stats(h, [r]) for h, r in zip(hyps, refs, strict=True)]
    assert sum(s.correct[0] for s in stats) == 6 and sum(s.guess[0] for s in stats) == 8
    # summed clipped matches / guesses per order: 6/8, 5/6, 4/4, 3/3; lengths 8 = 8 so no brevity penalty
    assert bleu4(hyps, refs) == pytest.approx(100 * (6 / 8 * 5 / 6 * 4 / 4 * 3 / 3) ** 0.25, rel=1e-8)
    assert per_sentence_mean == pytest.approx(50.0, abs=1e-3)


def test_rouge_uses_single_space_tokens_and_beta_1_2() -> None:
    # "a b c" vs "a  b" : split(" ") gives ["a", "", "b"], LCS with ["a", "b", "c"] = 2.
    p, r = 2 / 3, 2 / 3
    assert t.rouge_l_case("a  b", ["a b c"]) == pytest.approx(((1 + 1.44) * p * r) / (r + 1.44 * p))
    # Not F1: precision 1, recall 1/2 gives 0.5 * 2.44 / (0.5 + 1.44) ~ 0.6289, F1 would be 0.6667.
    assert t.rouge_l_case("a b", ["a b c d"]) == pytest.approx(2.44 * 0.5 / (0.5 + 1.44))
    assert t.rouge_l_case("x", ["a b"]) == 0.0


def test_sacrebleu_extra_column_and_signature() -> None:
    hyps = ["the liver is normal in size", "no focal lesion"]
    assert t.sacrebleu_corpus(hyps, hyps) == pytest.approx(100.0)
    assert t.sacrebleu_corpus(["completely different words here"], ["the liver is normal in size"]) < 5
    assert t.sacrebleu_signature().startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert math.isnan(t.sacrebleu_corpus([], []))


def test_macro_f1_counts_each_garbage_string_as_a_class() -> None:
    truth = ["a", "a", "b", "b"]
    pred = ["a", "", "b", "garbage"]
    # classes a, b (F1 2/3 each), "" and garbage (F1 0): union mean 1/3; over truth classes only 2/3.
    assert macro_f1(truth, pred) == pytest.approx(1 / 3)
    assert macro_f1(truth, pred, truth_classes=True) == pytest.approx(2 / 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert macro_f1(truth, pred) == pytest.approx(f1_score(truth, pred, average="macro"))


def test_macro_f1_metric_collapses_missing_predictions_into_one_class() -> None:
    ds = get_task("dd").dataset("23")
    verdicts = [
        Verdict(prediction="benign", truth="benign", counted=True, correct=True),
        Verdict(prediction=None, truth="benign", counted=True, correct=False),  # strict: unparseable
        Verdict(prediction="", truth="malignant", counted=True, correct=False),  # reference: unmatched
    ]
    # benign: P 1, R 1/2 -> 2/3; malignant: 0; "": 0  -> union 2/9; truth classes (2/3 + 0) / 2 = 1/3.
    assert m.METRICS["macro_f1"].compute(verdicts, ds) == pytest.approx(2 / 9)
    assert m.METRICS["macro_f1_truth_classes"].compute(verdicts, ds) == pytest.approx(1 / 3)
    assert m.METRICS["accuracy"].compute(verdicts, ds) == pytest.approx(1 / 3)


def test_cve_errors_on_min_max_normalised_values() -> None:
    errors = [0.1, 0.3]
    assert on_errors("rmse", errors) == pytest.approx(math.sqrt(0.05))
    assert on_errors("mae", errors) == pytest.approx(0.2)
    assert on_errors("std", errors) == pytest.approx(0.1)  # population std of signed errors, not RMSE
    assert on_errors("within_tolerance", errors) == 50.0  # |0.1| <= 0.1 is inside: inclusive
    assert on_errors("std", [0.5, 0.5]) == 0.0 and on_errors("rmse", [0.5, 0.5]) == 0.5


def test_cve_normalisation_without_clipping() -> None:
    ef = get_task("cve").dataset("18")  # EF, range [10, 75]
    assert m.normalise(42.5, (10.0, 75.0)) == pytest.approx(0.5)
    # EF answered as a fraction (0.55) lands below the range: no clipping, error > 0.6.
    assert m.signed_error(0.55, 42.5, (10.0, 75.0)) == pytest.approx(0.5 - (0.55 - 10) / 65)
    verdicts = [
        Verdict(prediction=42.5, truth=42.5, counted=True),
        Verdict(prediction=500.0, truth=42.5, counted=True),  # an error string parsed as 500 -> 7.54
    ]
    far = (500 - 10) / 65 - 0.5
    assert m.METRICS["rmse"].compute(verdicts, ef) == pytest.approx(math.sqrt(far**2 / 2))
    assert m.METRICS["mae"].compute(verdicts, ef) == pytest.approx(far / 2)
    assert m.METRICS["within_tolerance"].compute(verdicts, ef) == 50.0


def test_cve_missing_number_scores_as_the_farthest_range_end() -> None:
    assert m.signed_error(None, 8.0, (0.0, 10.0)) == pytest.approx(0.8)  # imputed 0
    assert m.signed_error(None, 2.0, (0.0, 10.0)) == pytest.approx(-0.8)  # imputed 10
    assert m.signed_error(None, 12.0, (0.0, 10.0)) == pytest.approx(1.2)  # truth out of range


def test_unit_scores_flip_lower_is_better_and_rescale() -> None:
    assert m.METRICS["accuracy"].unit_score(0.4) == 0.4
    assert m.METRICS["rmse"].unit_score(0.3) == pytest.approx(0.7)
    assert m.METRICS["bleu4"].unit_score(6.47) == pytest.approx(0.0647)
    assert m.METRICS["within_tolerance"].unit_score(50.0) == 0.5
    assert not m.METRICS["rmse"].higher_is_better and m.METRICS["bleu4"].higher_is_better
    with pytest.raises(KeyError, match="unknown metric"):
        m.get_metric("bleu5")


# ---------------------------------------------------------------- properties

labels = st.sampled_from(["benign", "malignant", "normal", "", "garbage"])
words = st.lists(st.sampled_from(["the", "liver", "is", "normal", "size", "."]), max_size=12).map(" ".join)


@given(st.lists(st.booleans(), min_size=1))
def test_accuracy_is_a_proportion(flags: list[bool]) -> None:
    value = accuracy(flags)
    assert 0.0 <= value <= 1.0
    assert value == accuracy(list(reversed(flags)))


@given(st.lists(st.tuples(labels, labels), min_size=1), st.randoms(use_true_random=False))
def test_f1_in_unit_interval_and_order_invariant(pairs: list[tuple[str, str]], rnd: random.Random) -> None:
    truth, pred = [t for t, _ in pairs], [p for _, p in pairs]
    value = macro_f1(truth, pred)
    assert 0.0 <= value <= 1.0
    rnd.shuffle(pairs)
    assert macro_f1([t for t, _ in pairs], [p for _, p in pairs]) == pytest.approx(value)


@given(st.lists(st.tuples(labels, labels), min_size=1), st.booleans())
def test_macro_f1_equals_sklearn(pairs: list[tuple[str, str]], truth_classes: bool) -> None:
    # The reference's sklearn call (labels=None: the union of classes) and strict's (labels = the truth classes).
    truth, pred = [t for t, _ in pairs], [p for _, p in pairs]
    subset = sorted(set(truth)) if truth_classes else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = f1_score(truth, pred, labels=subset, average="macro", zero_division=0.0)
    assert macro_f1(truth, pred, truth_classes=truth_classes) == pytest.approx(float(expected), abs=1e-12)


@given(st.lists(labels.filter(bool), min_size=1))
def test_perfect_classification_scores_one(truth: list[str]) -> None:
    assert accuracy([True] * len(truth)) == 1.0
    assert macro_f1(truth, truth) == 1.0
    assert macro_f1(truth, truth, truth_classes=True) == 1.0


@given(st.lists(st.tuples(words, words), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_text_metrics_bounded_and_order_invariant(pairs: list[tuple[str, str]], rnd: random.Random) -> None:
    hyps, refs = [h for h, _ in pairs], [r for _, r in pairs]
    bleu, rouge = bleu4(hyps, refs), rouge_l(hyps, refs)
    assert 0.0 <= bleu <= 100.0 and 0.0 <= rouge <= 100.0
    rnd.shuffle(pairs)
    assert bleu4([h for h, _ in pairs], [r for _, r in pairs]) == bleu  # integer sums: exact
    assert rouge_l([h for h, _ in pairs], [r for _, r in pairs]) == pytest.approx(rouge)


@given(st.lists(words.filter(lambda s: len(s.split()) >= 4), min_size=1, max_size=5))
def test_perfect_text_scores_full_marks(texts: list[str]) -> None:
    assert bleu4(texts, texts) == pytest.approx(100.0, rel=1e-6)
    assert rouge_l(texts, texts) == pytest.approx(100.0)


@given(st.lists(st.floats(0, 100), min_size=1, max_size=20))
def test_perfect_estimates_have_zero_error(values: list[float]) -> None:
    errors = [m.signed_error(v, v, (0.0, 100.0)) for v in values]
    assert on_errors("rmse", errors) == 0.0 and on_errors("mae", errors) == 0.0
    assert on_errors("within_tolerance", errors) == 100.0


def test_scores_are_the_official_arithmetic_to_the_bit() -> None:
    # The one definition (per-case statistics, summed, then finished) gives exactly the numbers the official
    # scorer's own expressions give, for every length: numpy's mean (pairwise sums), np.std's two passes,
    # Python's int / int for accuracy. Rounding to 4 decimals then lands on the same side.
    rng = random.Random(7)
    for n in [*range(1, 40), 127, 128, 129, 1000]:
        errors = [rng.uniform(-1.5, 1.5) for _ in range(n)]
        e = np.asarray(errors)
        assert on_errors("rmse", errors) == float(np.sqrt(np.mean(e**2)))
        assert on_errors("mae", errors) == float(np.mean(np.abs(e)))
        assert on_errors("std", errors) == float(np.std(e))
        assert on_errors("within_tolerance", errors) == float(np.mean(np.abs(e) <= m.TOLERANCE) * 100)
        flags = [rng.random() < 0.6 for _ in range(n)]
        assert accuracy(flags) == sum(flags) / len(flags)
        hyps = [
            " ".join(rng.choice(["liver", "normal", "size", "the", "is"]) for _ in range(rng.randint(0, 9)))
            for _ in range(n)
        ]
        refs = [
            " ".join(rng.choice(["liver", "normal", "size", "the", "cyst"]) for _ in range(rng.randint(1, 9)))
            for _ in range(n)
        ]
        assert (
            rouge_l(hyps, refs)
            == float(np.mean(np.array([t.rouge_l_case(h, [r]) for h, r in zip(hyps, refs, strict=True)]))) * 100
        )
        assert bleu4(hyps, refs) == t.corpus_bleu([t.bleu_stats(h, [r]) for h, r in zip(hyps, refs, strict=True)])
