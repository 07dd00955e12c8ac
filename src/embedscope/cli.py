"""Command line front door used by the Makefile: ``embedscope run-all``, ``compare`` and
``serve``. It reads the arguments and turns every refusal into one line (exit 1, or 2 for a
usage error); the runs themselves are :mod:`embedscope.runs` (a whole run) and
:mod:`embedscope.execute` (one notebook).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from embedscope.execute import NotebookFailed
from embedscope.ingest import SourceError
from embedscope.layout import (
    DiskFull,
    Layout,
    read_json,
)
from embedscope.models import ModelUnavailable, check_model
from embedscope.runs import UnknownParameter, run_all, run_compare
from embedscope.shipped import NOTEBOOKS_DIR
from embedscope.vocabulary import METHODS


def _value(text: str):
    """Parse a KEY=VALUE command line value as JSON when it is JSON, else keep the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


#: Where the commands read and write by default: the kit's own notebooks (the installed
#: package's, or a checkout's), and data/ and reports/ in the folder the command runs in.
NOTEBOOKS_HELP = "the notebooks to run (default: the kit's own)"
DATA_HELP = "where data/<name>/ goes (default: data, in the current folder)"
REPORTS_HELP = "where reports/<name>/ goes (default: reports, in the current folder)"


#: The Make variable that sets each checked option, per command (compare's --dims has none).
MAKE_VARIABLES = {
    ("run-all", "method"): "METHOD",
    ("run-all", "dims"): "DIMS",
    ("serve", "method"): "METHOD",
    ("serve", "dims"): "DIMS",
    ("compare", "methods"): "METHODS",
}


def _wrong_choice(args: argparse.Namespace) -> str | None:
    """One sentence for a --method(s) or --dims value that is not one of its choices, naming
    the Make variable that set it (argparse's own message names only the option, after a
    usage line that `make run-all METHOD=foo` never typed); the dims become an int."""
    allowed = {"method": METHODS, "methods": METHODS, "dims": ("3", "2")}
    for option, choices in allowed.items():
        given = getattr(args, option, None)
        if given is None:
            continue
        for value in given if isinstance(given, list) else [given]:
            if str(value) not in choices:
                flag = f"--{option}"
                variable = MAKE_VARIABLES.get((args.command, option))
                what = f"{variable} ({flag})" if variable else flag
                return f"{what} must be one of {', '.join(choices)}, not {str(value)!r}"
    if getattr(args, "dims", None) is not None:
        args.dims = int(args.dims)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="embedscope", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run-all", help="execute the four notebooks headlessly")
    run.add_argument(
        "--source", default="sample", help="sample, a folder, an archive or kaggle:o/d"
    )
    run.add_argument("--name", default="", help="dataset name (default: derived from source)")
    run.add_argument("--model", default="mobilenet_v2", help="mobilenet_v2, a hub id or a folder")
    run.add_argument("--method", default="pca", help=" | ".join(METHODS))
    run.add_argument("--dims", default="3", help="3 | 2")
    run.add_argument(
        "--decisions", default="", help="decisions.csv (path,label,tags) to apply in 01_download"
    )
    run.add_argument(
        "--labels", default="", help="CSV/parquet (path,label): the label of each image it names"
    )
    run.add_argument(
        "--vectors",
        default="",
        help="your own vectors (.parquet: path + vector; or .npy + .paths.txt): no embedding",
    )
    run.add_argument("--notebooks-dir", default=None, help=NOTEBOOKS_HELP)
    run.add_argument("--data-root", default="data", help=DATA_HELP)
    run.add_argument("--reports-root", default="reports", help=REPORTS_HELP)
    run.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra notebook parameter (JSON values allowed), repeatable",
    )
    cmp_ = sub.add_parser(
        "compare", help="execute 05_compare: several models/reducers side by side"
    )
    cmp_.add_argument("--name", required=True, help="dataset name (after run-all or 01_download)")
    cmp_.add_argument("--models", nargs="+", default=["mobilenet_v2"])
    cmp_.add_argument(
        "--methods",
        nargs="+",
        default=["pca", "umap", "tsne"],
        help=" | ".join(METHODS),
    )
    cmp_.add_argument("--dims", default="2", help="2 | 3")
    cmp_.add_argument("--notebooks-dir", default=None, help=NOTEBOOKS_HELP)
    cmp_.add_argument("--data-root", default="data", help=DATA_HELP)
    cmp_.add_argument("--reports-root", default="reports", help=REPORTS_HELP)
    srv = sub.add_parser("serve", help="serve a dataset's map as a Dash app on 127.0.0.1")
    srv.add_argument("--name", required=True, help="dataset name (as in reports/<name>)")
    srv.add_argument("--model", default=None, help="whose embeddings (default: the latest run)")
    srv.add_argument(
        "--method", default=None, help=" | ".join(METHODS) + " (default: the report's own)"
    )
    srv.add_argument("--dims", default=None, help="3 | 2 (default: the report's own)")
    srv.add_argument(
        "--host", default="127.0.0.1", help="bind address (default: this machine only)"
    )
    srv.add_argument("--port", type=int, default=8050)
    srv.add_argument("--data-root", default="data")
    srv.add_argument("--reports-root", default="reports")
    args = parser.parse_args(argv)
    wrong = _wrong_choice(args)
    if wrong:  # a usage error, like argparse's own (exit status 2), in the Makefile's words
        print(f"embedscope: error: {wrong}", file=sys.stderr)
        return 2
    if args.command == "serve":
        return _serve(args)
    if args.command == "compare":
        return _compare(args)
    extra = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--param needs KEY=VALUE, got {item!r}")
        extra[key] = _value(value)
    try:
        run_all(
            args.source,
            args.name,
            model=args.model,
            method=args.method,
            dims=args.dims,
            notebooks_dir=args.notebooks_dir or NOTEBOOKS_DIR,
            data_root=args.data_root,
            reports_root=args.reports_root,
            decisions=args.decisions or None,
            labels=args.labels or None,
            vectors=args.vectors or None,
            extra=extra,
        )
    except UnknownParameter as exc:  # a usage error, like argparse's own (exit status 2)
        print(f"embedscope: error: {exc}", file=sys.stderr)
        return 2
    except (
        NotebookFailed,
        SourceError,
        ModelUnavailable,
        ValueError,
        FileNotFoundError,
        DiskFull,
    ) as exc:
        print(f"embedscope: error: {exc}", file=sys.stderr)
        return 1
    return 0


def _compare(args: argparse.Namespace) -> int:
    """05_compare on the models that can be loaded here (the others named, skipped), into the
    report only when it succeeds: a failed comparison goes to ``failed/``, the last good one
    stays."""
    try:
        layout = Layout(
            args.name, Path(args.data_root).resolve(), Path(args.reports_root).resolve()
        )
    except ValueError as exc:
        print(f"embedscope: error: {exc}", file=sys.stderr)
        return 2
    if not layout.manifest.exists():
        print(
            f"embedscope: error: no dataset {layout.name!r} in {args.data_root}: run "
            f"`make run-all NAME={layout.name} SOURCE=...` first",
            file=sys.stderr,
        )
        return 1
    models = []
    for spec in args.models:
        try:
            models.append(check_model(spec))  # a local folder resolved from here
        except ModelUnavailable as exc:
            print(f"[embedscope] skipped model {spec!r}: {exc}", file=sys.stderr, flush=True)
    if not models:
        print("embedscope: error: none of the models can be loaded here", file=sys.stderr)
        return 1
    try:
        done = run_compare(
            layout, models, args.methods, dims=args.dims, notebooks_dir=args.notebooks_dir
        )
    except NotebookFailed as exc:
        print(f"embedscope: error: {exc}", file=sys.stderr)
        return 1
    print(f"[embedscope] done: {done}", flush=True)
    return 0


def report_app(
    name: str,
    data_root: str | Path = "data",
    reports_root: str | Path = "reports",
    *,
    model: str | None = None,
    method: str | None = None,
    dims: int | None = None,
):
    """The Dash app on a report's own map: the method and dims of its last run (and the model
    embedded last) unless given. An unknown name raises ``FileNotFoundError`` naming the
    ``make run-all`` to run."""
    from embedscope.explore.dash import create_app

    layout = Layout(name, Path(data_root), Path(reports_root))
    if not layout.manifest.exists() or not layout.metrics.exists():
        raise FileNotFoundError(
            f"no report {layout.name!r} to serve: run `make run-all NAME={layout.name} "
            "SOURCE=<your folder>` first"
        )
    shown = (read_json(layout.metrics, default={}) or {}).get("reduce", {})
    method = method or shown.get("method", "pca")
    dims = dims or shown.get("dims", 3)
    seed = shown.get("random_state", 0)  # the run's, so its point table file is the one read
    return create_app(layout, model=model, method=method, dims=dims, random_state=seed)


def _serve(args: argparse.Namespace) -> int:
    try:
        app = report_app(
            args.name,
            args.data_root,
            args.reports_root,
            model=args.model,
            method=args.method,
            dims=args.dims,
        )
    except (FileNotFoundError, ValueError, ModelUnavailable) as exc:
        print(f"embedscope: error: {exc}", file=sys.stderr)
        return 1
    app.run(host=args.host, port=args.port, debug=False)  # blocks; debug stays off
    return 0


if __name__ == "__main__":
    sys.exit(main())
