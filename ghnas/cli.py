"""The ``ghnas`` command line.

Subcommands::

    ghnas search     --space nb201 --budget 100 [--strategy random|evolution|tpe] [--ghn PATH] [--out DIR]
    ghnas score      --space nb201 [--proxy zero-shot] ARCH ... | --file archs.txt  [--out DIR]
    ghnas rank       (same as score)
    ghnas correlate  --space nb201 --truth cifar10_dev.csv [--proxies params,synflow] [--out DIR]
    ghnas meta-train --space nb201 --data cifar10 --steps 1000 --out DIR [--resume]
    ghnas archset    --space nb201 --n-train 1000 --n-val 100 --n-test 100 --out DIR
    ghnas bench      --space nb201 --n 20 --epochs 1 --out DIR

``--out`` is always a folder, and one rule resumes every long command: run it again into
the same folder. ``search``, ``score``, ``correlate`` and ``bench`` record their settings there
(``run.json``), refuse a run with other settings into it, and lock it while they run;
without ``--out`` they use ``runs/<command>-<space>-<digest of the settings>``, so the
same command resumes and another one gets its own folder. ``meta-train`` continues its
run folder with ``--resume``.

Bad input (an unknown space, proxy or strategy, an invalid architecture string, a
missing file, an output folder of another run: :class:`ghnas.errors.InputError`) ends
with a one-line message and exit status 2; set ``GHNAS_DEBUG=1`` to see the traceback
instead. Any other error is a bug: its traceback is shown with a request to report it.
A search or score table whose proxy ranked nothing (every score equal, or none finite)
says so and exits with status 3.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import json
import math
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "build_parser"]


from .errors import DegenerateResultWarning, InputError


class CLIError(InputError):
    """A user error found by the command line itself: printed as one line, exit status 2."""


#: exit status of a search or score table whose proxy ranked nothing
EXIT_DEGENERATE = 3


# ----------------------------------------------------------------------------------------
# small parsers
# ----------------------------------------------------------------------------------------
def _literal(text: str) -> Any:
    """``'8'`` -> 8, ``'true'`` -> True, ``'[1,2]'`` -> [1, 2], anything else stays a string."""
    try:
        return json.loads(text)
    except ValueError:
        low = text.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return text


def _kv(items: Sequence[str] | None, what: str) -> dict[str, Any] | None:
    """Parse ``KEY=VALUE`` items (also comma-separated: ``C=8,N=1``) into a dict."""
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        for part in _split_kv(item):
            if "=" not in part:
                raise CLIError(f"bad {what} {part!r}: expected KEY=VALUE, e.g. C=8")
            k, v = part.split("=", 1)
            if not k.strip():
                raise CLIError(f"bad {what} {part!r}: empty key")
            out[k.strip()] = _literal(v.strip())
    return out


def _split_kv(text: str) -> list[str]:
    # split on commas that start a new KEY=, so list values like k=[1,2] survive
    parts: list[str] = []
    for piece in text.split(","):
        if parts and "=" not in piece:
            parts[-1] += "," + piece
        else:
            parts.append(piece)
    return [p for p in (s.strip() for s in parts) if p]


def _names(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def _device(text: str | None) -> str | None:
    return None if text in (None, "auto") else text


_NOT_SETTINGS = {"func", "command", "quiet", "device", "threads", "top", "out", "n_boot_progress"}


def _out_folder(args, space_name: str) -> Path:
    """``--out``, or ``runs/<command>-<space>-<digest>``: a digest of the arguments that
    change the results, so the same command resumes and another gets its own folder."""
    if args.out:
        return Path(args.out)
    import hashlib

    from ._util import json_key

    given = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_SETTINGS}
    digest = hashlib.sha256(json_key(given).encode()).hexdigest()[:8]
    return Path("runs") / f"{args.command}-{space_name}-{digest}"


def _space(name: str):
    import search_spaces

    try:
        return search_spaces.get(name)
    except KeyError as e:
        raise CLIError(e.args[0]) from None


def _read_archs(args) -> list[str]:
    archs = list(args.archs or [])
    if args.file:
        path = Path(args.file)
        if not path.is_file():
            raise CLIError(f"architecture file {str(path)!r} does not exist")
        if path.suffix.lower() == ".csv":
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                col = args.arch_col
                if reader.fieldnames is None or col not in reader.fieldnames:
                    raise CLIError(f"{path}: no column {col!r}; columns: {reader.fieldnames}")
                archs += [row[col] for row in reader if row[col].strip()]
        else:
            for line in path.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    archs.append(line)
    if not archs:
        raise CLIError("no architectures given: pass them as arguments or with --file")
    return archs


def _check_archs(space, archs: Sequence[str]) -> None:
    from search_spaces import InvalidArchitecture

    for a in archs:
        try:
            space.validate(a)
        except InvalidArchitecture as e:
            raise CLIError(f"invalid {space.name} architecture {a!r}: {e}") from None


def _setup(args, space, proxy: str, dev, ghn_only_if_needed: bool = False):
    """The proxy ready to score (its GHN loaded once; ``--ghn`` goes to GHN proxies)."""
    from .searching import prepare_proxy

    return prepare_proxy(space, proxy, ghn=args.ghn, build_kwargs=_kv(args.build, "--build value"),
                         batch_size=args.batch_size, device=dev, ghn_only_if_needed=ghn_only_if_needed)


def _proxy_data(args):
    from .searching import proxy_images

    return proxy_images(args.data, args.data_root, args.val_size)


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]], last_left: bool = True) -> None:
    widths = [max(len(h), *(len(r[j]) for r in rows)) if rows else len(h) for j, h in enumerate(header)]
    n = len(header) - 1 if last_left else len(header)

    def line(cells):
        left = "  ".join(c.rjust(w) for c, w in zip(cells[:n], widths[:n]))
        return left + ("  " + cells[-1] if last_left else "")

    print(line(list(header)))
    for r in rows:
        print(line(list(r)))


def _fmt(v: float) -> str:
    if v is None:
        return ""
    if not math.isfinite(v):
        return str(v)
    return f"{v:.6g}"


# ----------------------------------------------------------------------------------------
# subcommands
# ----------------------------------------------------------------------------------------
def cmd_search(args) -> int:
    from .searching import search

    space = _space(args.space)
    out = _out_folder(args, space.name)
    strategy_kwargs = _kv(args.option, "--option value") or {}
    for k in ("population", "sample_size"):
        v = getattr(args, k)
        if v is not None:
            strategy_kwargs[k] = v
    train_kwargs = None
    if args.train_top_k:
        train_kwargs = {"batch_size": args.train_batch_size}
        if args.train_epochs is not None:
            train_kwargs["epochs"] = args.train_epochs
        else:
            train_kwargs["steps"] = args.train_steps
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateResultWarning)  # said below, as the exit status
        result = _search_from_args(search, args, space, out, strategy_kwargs, train_kwargs)
    print(result.summary(args.top))
    print(f"wrote {out / 'result.json'} and {out / 'search.png'}")
    if result.degenerate:
        print(f"ghnas search: no best architecture: {result.degenerate}", file=sys.stderr)
        return EXIT_DEGENERATE
    print(f"\nbest: {result.best_arch}")
    return 0


def _search_from_args(search, args, space, out: Path, strategy_kwargs: dict, train_kwargs: dict | None):
    return search(
        space=space, budget=args.budget, proxy=args.proxy, strategy=args.strategy, data=args.data,
        seed=args.seed, train_top_k=args.train_top_k, build_kwargs=_kv(args.build, "--build value"),
        ghn=args.ghn, device=_torch_device(args.device), progress=not args.quiet, out_dir=out,
        data_root=args.data_root, batch_size=args.batch_size, val_size=args.val_size,
        train_data=args.train_data, train_kwargs=train_kwargs,
        threads=None if args.threads == 0 else args.threads, **strategy_kwargs)


def cmd_score(args) -> int:
    from .proxies import score

    space = _space(args.space)
    archs = _read_archs(args)
    _check_archs(space, archs)
    dev = _torch_device(args.device)
    proxy = args.proxy or ("ghn" if args.ghn else "zero-shot")  # as ghnas search
    setup = _setup(args, space, proxy, dev)
    data = _proxy_data(args) if setup.proxy.needs_data else None
    out = Path(args.out) if args.out else None
    cache = out / "scores.jsonl" if out is not None else None
    run = contextlib.nullcontext()
    if out is not None:
        from ._io import RunFolder

        run = RunFolder(out, "score", {"space": space.name, "proxy": setup.label, "archs": archs, "seed": args.seed,
                                       "data": args.data, "data_root": args.data_root, "val_size": args.val_size,
                                       "batch_size": setup.batch_size, "build_kwargs": setup.build_kwargs,
                                       **setup.settings})
    with run, _maybe_threads(args, dev):
        table = score(archs, space, setup.proxy, data, args.seed, setup.batch_size, setup.build_kwargs,
                      not args.quiet, cache=cache, device=dev)
        if out is not None:
            table.to_csv(out / "scores.csv")
    ranked = table.ranked()
    order = {id(r): i for i, r in enumerate(table.rows)}
    _print_table(["rank", "score", "seconds", "input"] + ["arch"],
                 [[str(i), _fmt(r.score), f"{r.seconds:.2f}", str(order[id(r)] + 1), r.arch]
                  for i, r in enumerate(ranked, 1)])
    if out is not None:
        print(f"wrote {out / 'scores.csv'}")
    if table.degenerate:
        print(f"ghnas {args.command}: the ranking is meaningless: {table.degenerate}", file=sys.stderr)
        return EXIT_DEGENERATE
    return 0


def _torch_device(text: str | None):
    from ._util import default_device

    try:
        return default_device(_device(text))
    except RuntimeError as e:  # torch's message for a malformed device string
        raise CLIError(f"bad --device {text!r}: {e}") from None


def _maybe_threads(args, dev):
    from ._util import cpu_threads

    n = getattr(args, "threads", None)
    return cpu_threads(None if not n else n, dev)


def _correlate_proxies(args, space) -> list[str]:
    from .ghn import default_ghn_name
    from .proxies import available_proxies

    proxies = _names(args.proxies)
    if not proxies:
        proxies = ["params", "flops", "synflow"]
        if args.ghn or default_ghn_name(space.name) is not None:
            proxies.insert(0, "ghn")
    known = set(available_proxies())
    from .proxies.ensemble import PREFIXES

    bad = [p for p in proxies if p not in known and not p.startswith(tuple(PREFIXES.values())) and "+" not in p]
    if bad:
        raise CLIError(f"unknown proxy {bad[0]!r}; valid proxies: {', '.join(sorted(known))}")
    return proxies


def _read_truth(args, space):
    from . import correlation

    truth_path = Path(args.truth)
    if not truth_path.is_file():
        raise CLIError(f"ground-truth file {str(truth_path)!r} does not exist")
    try:
        # unnamed columns: the dev files' own (arch/test_acc for NB201, genotype/val_acc for NB301)
        args.arch_col, args.acc_col = correlation.truth_columns(truth_path, args.arch_col, args.acc_col)
        truth = correlation.read_truth(truth_path, args.arch_col, args.acc_col, space)
    except ValueError as e:  # the file's content is the user's input; the message names file and line
        raise CLIError(str(e)) from None
    archs = list(truth)
    if args.n is not None:
        if args.n < 5:
            raise CLIError(f"--n must be at least 5 (rank statistics need a few points), got {args.n}")
        archs = archs[: args.n]
    return truth_path, {a: truth[a] for a in archs}


def cmd_correlate(args) -> int:
    from . import correlation
    from ._io import RunFolder
    from .proxies import score

    space = _space(args.space)
    truth_path, truth = _read_truth(args, space)
    archs = list(truth)
    proxies = _correlate_proxies(args, space)
    dev = _torch_device(args.device)
    setups = [_setup(args, space, name, dev, ghn_only_if_needed=True) for name in proxies]
    if args.ghn and not any(s.proxy.needs_ghn for s in setups):
        raise CLIError(f"--ghn is only used by GHN proxies (ghn, ghn_acc, or an ensemble with one); "
                       f"--proxies {','.join(proxies)} has none")
    out = _out_folder(args, space.name)
    run_settings = {"space": space.name, "truth": str(truth_path.resolve()), "acc_col": args.acc_col,
                    "n": len(archs), "seed": args.seed, "data": args.data, "data_root": args.data_root,
                    "val_size": args.val_size, "n_boot": args.n_boot,
                    "proxies": {n: {"build_kwargs": s.build_kwargs, "batch_size": s.batch_size, **s.settings}
                                for n, s in zip(proxies, setups)}}
    with RunFolder(out, "correlate", run_settings):
        data = None
        scores: dict[str, dict[str, float]] = {}
        seconds: dict[str, float] = {}
        for name, setup in zip(proxies, setups):
            if setup.proxy.needs_data and data is None:
                data = _proxy_data(args)
            if not args.quiet:
                print(f"scoring {len(archs)} architectures with {name} ...", file=sys.stderr)
            with _maybe_threads(args, dev):
                table = score(archs, space, setup.proxy, data if setup.proxy.needs_data else None, args.seed,
                              setup.batch_size, setup.build_kwargs, not args.quiet,
                              cache=out / "scores.jsonl", device=dev)
            if table.degenerate:
                print(f"ghnas correlate: {name} ranked nothing: {table.degenerate}", file=sys.stderr)
            sign = 1.0 if table.higher_is_better else -1.0  # correlate() wants higher = better
            scores[name] = {a: sign * r.score for a, r in zip(archs, table.rows)}
            seconds[name] = sum(r.seconds for r in table.rows) / len(table.rows)
        report = correlation.correlate(scores, truth, seconds, n_boot=args.n_boot, seed=args.seed)
        _write_correlation(out, report, scores, truth, proxies, truth_path, args.acc_col, space.name)
    print(report.table())
    print(f"wrote {out / 'report.json'}, {out / 'report.md'}, {out / 'scores.csv'} and {out / 'scatter.png'}")
    return 0


def _write_correlation(out: Path, report, scores, truth, proxies, truth_path: Path, acc_col: str,
                       space_name: str) -> None:
    from . import correlation
    from ._io import atomic_write_text

    report.to_json(out / "report.json")
    atomic_write_text(out / "report.md", f"# {space_name}: {len(truth)} architectures of {truth_path.name} "
                                         f"({acc_col})\n\n{report.table()}\n")
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["arch", acc_col] + proxies)
    for a in truth:
        w.writerow([a, repr(truth[a])] + [repr(scores[p][a]) for p in proxies])
    atomic_write_text(out / "scores.csv", buf.getvalue())
    correlation.scatter_plots(scores, truth, out / "scatter.png", truth_label=acc_col, x_axis="rank")


def _metatrain_docs() -> dict[str, str]:
    """Per-field help from the ``Attributes:`` section of MetaTrainConfig's docstring."""
    from .metatrain import MetaTrainConfig

    text = (MetaTrainConfig.__doc__ or "").split("Attributes:", 1)[-1]
    docs: dict[str, str] = {}
    names: list[str] = []
    for line in text.splitlines():
        head, sep, rest = line.strip().partition(": ")
        if sep and len(line) - len(line.lstrip()) == 8 and all(n.strip().isidentifier() for n in head.split(",")):
            names = [n.strip() for n in head.split(",")]
            for n in names:
                docs[n] = rest.strip()
        elif line.strip() and names:
            for n in names:
                docs[n] += " " + line.strip()
    # plain text for a terminal: ``x`` and :func:`x` become x
    return {k: re.sub(r"(?::\w+:)?`+([^`]+)`+", r"\1", v) for k, v in docs.items()}


def _metatrain_fields():
    from .metatrain import MetaTrainConfig

    return [f for f in dataclasses.fields(MetaTrainConfig)]


def cmd_meta_train(args) -> int:
    from .metatrain import MetaTrainConfig, meta_train

    given: dict[str, Any] = {}
    for f in _metatrain_fields():
        if f.name == "build_kwargs":
            v = _kv(args.build, "--build value")
        else:
            v = getattr(args, f"mt_{f.name}")
        if v is not None:
            given[f.name] = v
    if args.mt_archset and not Path(args.mt_archset).is_file():
        raise CLIError(f"architecture dataset {args.mt_archset!r} does not exist")
    # the one resume rule of every long command: the same --out folder continues its run
    # (other settings are refused by meta_train); --resume says so explicitly
    if args.resume or (Path(args.out) / "state.pt").exists():
        res = meta_train(args.out, None, resume=True, progress=not args.quiet, **given)
    else:
        try:
            config = MetaTrainConfig(**given)
        except (TypeError, ValueError) as e:  # the options themselves are the input
            raise CLIError(str(e)) from None
        res = meta_train(args.out, config, progress=not args.quiet)
    last = res.evals[-1] if res.evals else None
    print(f"meta-trained {res.step} steps in {res.seconds:.0f}s; GHN written to {res.ghn_path}")
    if last:
        print("last evaluation: " + ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}"
                                              for k, v in last.items()))
    return 0


def cmd_archset(args) -> int:
    from .archset import write_archset

    _space(args.space)
    out = Path(args.out)
    if out.suffix.lower() in (".h5", ".hdf5"):
        raise CLIError(f"--out names a folder (the dataset goes to OUT/archset.h5), not a file: {str(out)!r}")
    path = write_archset(out / "archset.h5", space=args.space, n_train=args.n_train, n_val=args.n_val,
                         n_test=args.n_test, seed=args.seed, build_kwargs=_kv(args.build, "--build value"),
                         progress=not args.quiet)
    print(f"wrote {path}")
    return 0


def cmd_bench(args) -> int:
    from .bench import bench

    _space(args.space)
    folder = Path(args.out)
    if folder.suffix.lower() == ".csv":
        raise CLIError(f"--out names a folder (results go to OUT/bench.csv), not a file: {str(folder)!r}")
    from ._io import RunFolder

    # --n may grow between runs: more architectures extend the same table
    settings = {k: v for k, v in sorted(vars(args).items()) if k not in _NOT_SETTINGS | {"n"}}
    with RunFolder(folder, "bench", settings):
        out = bench(space=args.space, n=args.n, epochs=args.epochs, data=args.data, data_root=args.data_root,
                    out=folder / "bench.csv", seed=args.seed, build_kwargs=_kv(args.build, "--build value"),
                    train_kwargs=_kv(args.train, "--train value"), device=_device(args.device),
                    progress=not args.quiet, train_size=args.train_size,
                    **({} if args.val_size is None else {"val_size": args.val_size}),
                    data_seed=args.data_seed)
    print(f"wrote {out}")
    return 0


# ----------------------------------------------------------------------------------------
# parser
# ----------------------------------------------------------------------------------------
def _common(p: argparse.ArgumentParser, data: bool = True) -> None:
    p.add_argument("--space", default="nb201", help="search space: nb201, darts or a registered name")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--build", action="append", metavar="KEY=VALUE",
                   help="network size passed to the space's build(), e.g. --build C=8,N=1 "
                        "(default: the proxy sizes of ghnas.searching.PROXY_BUILD_KWARGS)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    if data:
        p.add_argument("--data", default="sample",
                       help="images: sample (shipped CIFAR-10 sample, offline), cifar10 or "
                            "imagefolder:PATH (default: sample)")
        p.add_argument("--data-root", default=None, help="dataset root folder for --data")
        p.add_argument("--val-size", type=int, default=None,
                       help="images in the validation split carved from --data's training images "
                            "(default: 5000 for CIFAR-10, a tenth of a smaller ImageFolder)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .searching.strategies import available_strategies

    ap = argparse.ArgumentParser(prog="ghnas", description="Neural architecture search with Graph HyperNetworks.")
    ap.add_argument("--version", action="version", version=f"ghnas {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    # search
    p = sub.add_parser("search", help="search a space with a proxy",
                       description="Score BUDGET distinct architectures with a proxy and report the best.")
    _common(p)
    p.add_argument("--budget", type=int, default=100, help="distinct architectures to score (default 100)")
    p.add_argument("--strategy", default="random", choices=available_strategies(),
                   help="search strategy (default random)")
    p.add_argument("--proxy", default=None,
                   help="zero-shot (the space's chosen aggregate; the default without --ghn), ghn (the "
                        "default with --ghn), meco, synflow, ... or vote:a,b")
    p.add_argument("--ghn", default=None, help="GHN name or checkpoint path (default: the GHN shipped for the space)")
    p.add_argument("--batch-size", type=int, default=None, help="images scored per architecture (default: the "
                                                                  "proxy's own: ghn 1,000 on NB201 and 500 on DARTS, "
                                                                  "most others 64)")
    p.add_argument("--population", type=int, default=None, help="evolution: population size (20)")
    p.add_argument("--sample-size", type=int, default=None, help="evolution: tournament size (5)")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="other strategy options, e.g. --option n_startup_trials=5 (tpe)")
    p.add_argument("--train-top-k", type=int, default=0, help="train the K best briefly and report val accuracy")
    p.add_argument("--train-steps", type=int, default=100, help="SGD steps per trained network (default 100)")
    p.add_argument("--train-epochs", type=float, default=None, help="train for epochs instead of steps")
    p.add_argument("--train-batch-size", type=int, default=64)
    p.add_argument("--train-data", default=None,
                   help="data for --train-top-k (default --data; 'sample' has no train split)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads while scoring (default 1; 0 = torch's default)")
    p.add_argument("--top", type=int, default=10, help="rows of the summary table (default 10)")
    p.add_argument("--out", default=None, help="output folder (default runs/search-<space>-<digest of the "
                                               "settings>); the same command into it resumes")
    p.set_defaults(func=cmd_search)

    # score / rank
    for name in ("score", "rank"):
        p = sub.add_parser(name, help="score architectures with a proxy" + (" (alias of score)" if name == "rank" else ""),
                           description="Score architectures with a proxy and print them ranked.")
        _common(p)
        p.add_argument("archs", nargs="*", metavar="ARCH", help="architecture strings")
        p.add_argument("--file", "-f", default=None,
                       help="text file with one architecture per line (# comments), or a .csv with --arch-col")
        p.add_argument("--arch-col", default="arch", help="architecture column of a .csv --file")
        p.add_argument("--proxy", default=None,
                       help="proxy name (default: zero-shot, the space's chosen aggregate; ghn with --ghn)")
        p.add_argument("--ghn", default=None, help="GHN name or path for --proxy ghn (and the default then)")
        p.add_argument("--batch-size", type=int, default=None)
        p.add_argument("--threads", type=int, default=1, help="CPU threads while scoring (0 = torch's default)")
        p.add_argument("--out", default=None,
                       help="output folder: scores.csv, and the score cache scores.jsonl (a re-run resumes)")
        p.set_defaults(func=cmd_score)

    # correlate
    p = sub.add_parser("correlate", help="rank correlation of proxies with ground truth",
                       description="Score the architectures of a ground-truth CSV with proxies and "
                                   "report Kendall tau, Spearman rho and top-10%% precision.")
    _common(p)
    p.add_argument("--truth", required=True, help="CSV with an architecture and an accuracy column")
    p.add_argument("--arch-col", default=None, help="architecture column (default: arch or genotype)")
    p.add_argument("--acc-col", default=None,
                   help="accuracy column (default: the first of test_acc, val_acc, valid_acc)")
    p.add_argument("--proxies", default=None,
                   help="comma-separated proxies (default: the fast ones: ghn if a GHN is available, "
                        "params, flops, synflow); aggregates as zero-shot, a+b or logrank:a+b")
    p.add_argument("--ghn", default=None, help="GHN name or path for the ghn proxy")
    p.add_argument("--n", type=int, default=None, help="use the first N architectures of the file")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.add_argument("--threads", type=int, default=1, help="CPU threads while scoring (0 = torch's default)")
    p.add_argument("--out", default=None, help="output folder (default runs/correlate-<space>-<digest of "
                                               "the settings>); scores are cached there, so a re-run resumes")
    p.set_defaults(func=cmd_correlate)

    # meta-train: one option per MetaTrainConfig field
    p = sub.add_parser("meta-train", help="meta-train a GHN on a space",
                       description="Meta-train a GHN-2 (ghnas.metatrain.meta_train). Options not given "
                                   "keep MetaTrainConfig's defaults (or, with --resume, the saved run's values).")
    p.add_argument("--out", required=True, help="run folder (checkpoints, ghn.pt, curve)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--build", action="append", metavar="KEY=VALUE", help="network size, e.g. --build C=8,N=1")
    p.add_argument("--quiet", "-q", action="store_true")
    docs = _metatrain_docs()
    for f in _metatrain_fields():
        if f.name == "build_kwargs":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = type(default)
        doc = docs.get(f.name, "").replace("%", "%%")
        if kind is bool:
            p.add_argument(flag, dest=f"mt_{f.name}", action=argparse.BooleanOptionalAction, default=None,
                           help=f"{doc} (default {default})")
        elif kind is tuple:
            elem = float if f.name == "lr_drops" else int
            p.add_argument(flag, dest=f"mt_{f.name}", default=None, metavar="A,B,...",
                           type=lambda s, e=elem: tuple(e(x) for x in s.split(",") if x.strip()),
                           help=f"{doc} (comma-separated; default {','.join(map(str, default))})")
        elif kind in (int, float):
            p.add_argument(flag, dest=f"mt_{f.name}", type=kind, default=None, metavar=f.name.upper(),
                           help=f"{doc} (default {default})")
        else:
            p.add_argument(flag, dest=f"mt_{f.name}", default=None, metavar=f.name.upper(),
                           help=f"{doc} (default {default})")
    p.set_defaults(func=cmd_meta_train)

    # archset
    p = sub.add_parser("archset", help="write an HDF5 architecture dataset",
                       description="Sample architectures, extract their graphs, write train/val/test splits.")
    p.add_argument("--space", default="nb201")
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--n-val", type=int, default=100)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--build", action="append", metavar="KEY=VALUE", help="network size, e.g. --build C=16,N=5")
    p.add_argument("--out", required=True, help="output folder; the dataset is written to OUT/archset.h5")
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=cmd_archset)

    # bench
    p = sub.add_parser("bench", help="ground truth by brief training",
                       description="Train N sampled architectures briefly; append val accuracy to a CSV.")
    _common(p)
    p.set_defaults(data="cifar10")
    p.add_argument("--n", type=int, default=20, help="architectures (default 20)")
    p.add_argument("--epochs", type=float, default=1.0, help="training epochs per architecture (default 1)")
    p.add_argument("--out", required=True, help="output folder; results are appended to OUT/bench.csv (resumes)")
    p.add_argument("--train", action="append", metavar="KEY=VALUE",
                   help="ghnas.train.train options, e.g. --train batch_size=128,lr=0.05")
    p.add_argument("--train-size", type=int, default=None, help="train on a subset of this many images")
    p.add_argument("--data-seed", type=int, default=0)
    p.set_defaults(func=cmd_bench)
    return ap


# ----------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------
def _user_errors() -> tuple[type[BaseException], ...]:
    """The documented input errors: ours, an invalid architecture string, and file-system
    errors about the paths given (missing, existing, not a folder, no permission)."""
    from search_spaces import InvalidArchitecture

    return (InputError, InvalidArchitecture, FileNotFoundError, FileExistsError, IsADirectoryError,
            NotADirectoryError, PermissionError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 2 bad input, 3 nothing ranked,
    130 interrupted). Other errors propagate with their traceback: they are bugs."""
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = os.environ.get("GHNAS_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\nghnas: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except _user_errors() as e:
        if debug:
            raise
        msg = " ".join(str(e).split())  # one line
        print(f"ghnas {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except Exception:
        print(f"ghnas {args.command}: internal error (a bug in ghnas, not in your input); please report "
              "it with the traceback below and the command you ran", file=sys.stderr)
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
