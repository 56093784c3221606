"""``u2eval view``: a run's cases in a page, each with its image, the prompt as sent, the answer and its verdicts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from u2eval.cli.common import app, console
from u2eval.errors import ConfigError
from u2eval.run.identity import VIEW_FOLDER


@app.command()
def view(
    run_dir: Annotated[Path, typer.Argument(help="a run folder")],
    run_b: Annotated[Path | None, typer.Argument(help="a second run of the same cases: each case beside it")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="folder for the page (default: RUN/view)")] = None,
    no_images: Annotated[bool, typer.Option("--no-images", help="leave the images out (no dataset read)")] = False,
    serve: Annotated[bool, typer.Option("--serve", help="serve the page on 127.0.0.1 until Ctrl-C")] = False,
    port: Annotated[int, typer.Option(min=0, max=65535, help="with --serve: the port (0: any free one)")] = 0,
) -> None:
    """Browse a run's cases: filters, the image with the truth and the answer drawn on it, both verdicts; with a
    second run, each case beside its answer there and McNemar's cells per task."""
    from u2eval.view.page import build_view

    for folder in (run_dir, run_b):
        if folder is not None and not folder.is_dir():
            raise ConfigError(f"no such run folder: {folder}")
    out = out_dir or run_dir / (VIEW_FOLDER if run_b is None else f"{VIEW_FOLDER}-vs-{run_b.name}")
    result = build_view(run_dir, out, with_images=not no_images, run_b=run_b)
    console.print(
        f"wrote {result.page} ({result.cases} cases, {result.images} images, "
        f"{result.bytes_written / 1e6:.1f} MB, {result.seconds:.1f} s)"
    )
    if result.missing_images:
        console.print(f"[yellow]{result.missing_images} case(s) without an image: the page says why for each")
    if serve:
        _serve(out, port)


def _serve(folder: Path, port: int) -> None:
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        console.print(f"serving http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            console.print("stopped")
