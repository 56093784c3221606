"""``u2eval judge``, ``judge-agreement`` and ``judge-check``: a judge model reads a finished run's answers; two
judges compared; a judge measured on the hand-made gold set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from u2eval.cli.common import (
    EXIT_INFRA,
    AttemptsOpt,
    BaseUrlOpt,
    ConcurrencyOpt,
    MaxTokensOpt,
    ModelArgOpt,
    RpmOpt,
    SeedOpt,
    TemperatureOpt,
    TimeoutOpt,
    TpmOpt,
    app,
    comma_list,
    console,
    out,
    progress_bar,
)
from u2eval.errors import ConfigError

JudgeModelOpt = Annotated[
    str,
    typer.Option("--model", "-m", help="the judge: provider/model or a preset"),
]
RevisionOpt = Annotated[
    str | None, typer.Option("--revision", help="the judge's weights (a commit or tag): part of its identity")
]
OnlyOpt = Annotated[
    str | None, typer.Option(help="ask only about extraction or clinical (default: both; the other's readings stay)")
]


@app.command()
def judge(
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder")],
    model: JudgeModelOpt,
    base_url: BaseUrlOpt = None,
    revision: RevisionOpt = None,
    model_arg: ModelArgOpt = None,
    only: OnlyOpt = None,
    concurrency: ConcurrencyOpt = None,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    timeout: TimeoutOpt = None,
    max_attempts: AttemptsOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
    seed: SeedOpt = 0,
) -> None:
    """Have a judge model read a run's stored answers (those strict cannot parse, and reports and captions),
    then score the run in the judged mode too. Resumes: a second pass asks only what the first did not get."""
    from u2eval.judges.judge_pass import JudgeOptions, judge_run
    from u2eval.models.registry import parse_model_args
    from u2eval.run.options import RunProgress
    from u2eval.scoring.judge_report import judge_label
    from u2eval.scoring.summary_report import print_summary

    if not run_dir.is_dir():
        raise ConfigError(f"no such run folder: {run_dir}")
    kinds = tuple(comma_list(only) or ("extraction", "clinical"))
    options = JudgeOptions(
        run=run_dir,
        model=model,
        base_url=",".join(u for value in base_url for u in comma_list(value) or ()) if base_url else None,
        revision=revision,
        model_args=parse_model_args(model_arg or []),
        kinds=kinds,  # type: ignore[arg-type]  # checked by judge_run
        concurrency=concurrency,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        timeout_s=timeout,
        max_attempts=max_attempts,
        rpm=rpm,
        tpm=tpm,
    )
    with progress_bar("judge", detailed=True) as (bar, job):

        def show(at: RunProgress) -> None:
            info = f"retries {at.retries} · infra errors {at.infra_errors}" if at.retries or at.infra_errors else ""
            bar.update(job, completed=at.done, total=at.total, info=info)

        result = judge_run(options, progress=show)
    print_summary(result.summary, out)
    wanted = ", ".join(f"{n} {kind}" for kind, n in result.to_judge.items())
    console.print(
        f"judge {escape(judge_label(result.identity))} in {escape(str(result.folder))}: answers to read: {wanted}; "
        f"asked {result.asked}, reused {result.reused} stored readings"
    )
    if result.failed:
        console.print(
            f"[red]{result.failed} answer(s) have no reading: their judge call failed, so the judged mode is partial. "
            "Run the same command again to ask again."
        )
        raise typer.Exit(EXIT_INFRA)


@app.command("judge-agreement")
def judge_agreement(
    runs: Annotated[list[Path], typer.Argument(help="one run folder read by two judges, or two judged run folders")],
    judges: Annotated[
        str | None,
        typer.Option(help="A,B: two judges of the run (their folders under judges/); with two runs, one of each"),
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="write agreement.md and agreement.json here")] = None,
    bootstrap: Annotated[int, typer.Option(min=10, help="bootstrap resamples for the paired interval")] = 1000,
    bootstrap_seed: Annotated[int, typer.Option(help="bootstrap seed")] = 0,
) -> None:
    """Compare two judges' readings of the same answers: Cohen's kappa and McNemar for extraction, rank
    correlation and a paired bootstrap for the clinical score, and where they disagree most."""
    from u2eval.judges.agreement import compare_judges, load_judged, render_agreement
    from u2eval.run.folder import write_json

    names: list[str] = list(comma_list(judges) or ())
    if len(runs) == 1:
        if len(names) != 2:
            raise ConfigError("one run folder needs --judges A,B (the names of two judges that read it)")
        pair = (load_judged(runs[0], names[0]), load_judged(runs[0], names[1]))
    elif len(runs) == 2:
        if names and len(names) != 2:
            raise ConfigError("--judges with two run folders names one judge of each: A,B")
        pair = (load_judged(runs[0], names[0] if names else None), load_judged(runs[1], names[1] if names else None))
    else:
        raise ConfigError(f"give one run folder and --judges A,B, or two judged run folders (not {len(runs)})")
    try:
        report = compare_judges(*pair, resamples=bootstrap, seed=bootstrap_seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    text = render_agreement(report)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "agreement.md").write_text(text, encoding="utf-8")
        write_json(out_dir / "agreement.json", report.model_dump(mode="json"))
    out.print(text, markup=False, highlight=False)


@app.command("judge-check")
def judge_check(
    model: JudgeModelOpt,
    base_url: BaseUrlOpt = None,
    revision: RevisionOpt = None,
    model_arg: ModelArgOpt = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="the check's folder: the judge's store and gold.md / gold.json")
    ] = None,
    concurrency: ConcurrencyOpt = None,
    timeout: TimeoutOpt = None,
    max_attempts: AttemptsOpt = None,
    max_tokens: MaxTokensOpt = None,
    temperature: TemperatureOpt = None,
    seed: SeedOpt = 0,
) -> None:
    """Measure a judge on u2eval's hand-made gold set (answers and report pairs whose right reading is known)."""
    from u2eval.judges.gold import check_judge, render_gold
    from u2eval.judges.judge_pass import JudgeOptions, identity_of, resolve_judge
    from u2eval.models.registry import parse_model_args
    from u2eval.run.folder import write_json
    from u2eval.scoring.judge_report import judge_label

    args = parse_model_args(model_arg or [])
    slug = "".join(ch if ch.isalnum() or ch in "._-" else "-" for ch in model)
    folder = out_dir or Path("results") / f"judge-check__{slug}"
    options = JudgeOptions(
        run=folder,
        model=model,
        base_url=",".join(u for value in base_url for u in comma_list(value) or ()) if base_url else None,
        revision=revision,
        model_args=args,
        concurrency=concurrency,
        max_tokens=max_tokens,
        temperature=temperature,
        seed=seed,
        timeout_s=timeout,
        max_attempts=max_attempts,
    )
    adapter, preset, generation, dispatch = resolve_judge(options, None)
    identity = identity_of(adapter, preset, generation, options)
    report = check_judge(adapter, generation, dispatch, folder / identity.name, judge_label(identity))
    text = render_gold(report)
    (folder / "gold.md").write_text(text, encoding="utf-8")
    write_json(folder / "gold.json", report.model_dump(mode="json"))
    out.print(text, markup=False, highlight=False)
    console.print(f"check folder: {escape(str(folder))}")
    if report.failed:
        raise typer.Exit(EXIT_INFRA)
