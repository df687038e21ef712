"""End-to-end seconds to score 100 architectures with each proxy, as a user's call costs.

The speed target of the zero-shot default is "100 architectures of either space in
<= 60 s on this 2-core CPU, including image loading". ``bench_proxies.py`` records the
build + score time of each architecture inside a long run (warm caches, shared CPU); this
script measures what a user pays instead: a fresh Python process per (space, proxy) that
loads the shipped CIFAR-10 sample, then scores the first ``--n`` tuning-half architectures
of the dev set with :func:`ghnas.proxies.score` (one torch thread, no score cache), at the
proxy network size (where the default scores) with the settings and batch that
``bench_proxies.py`` used for that proxy. Reported: the time
to import ghnas, to load the images, to score, and ``s/arch`` = (images + scoring) / n.

``benchmarks/choose_default.py --costs`` uses these seconds as the cost of each member.

    python benchmarks/bench_proxy_speed.py --space nb201
    python benchmarks/bench_proxy_speed.py --space darts --proxies params,flops,l2_norm,meco
    # a candidate aggregate ('+' between members; settings and batches as bench_proxies'):
    # members that share a pass (AZ-NAS's statistics) cost less together than apart
    python benchmarks/bench_proxy_speed.py --space darts --proxies az_expressivity+az_progressivity
    # at another of bench_proxies' sizes: NAME@SIZE (the GHN proxy alone ranks DARTS at 'bench')
    python benchmarks/bench_proxy_speed.py --space darts --proxies ghn:200@bench

Writes ``benchmarks/results/proxy_speed/<space>.{json,md}`` (merged with earlier runs, so
proxies can be measured a few at a time).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

OUT = REPO / "benchmarks" / "results" / "proxy_speed"


def measure(space: str, proxy: str, n: int, root: Path) -> dict:
    """Run in the child process: time imports, image loading and scoring of ``n`` archs."""
    t0 = time.perf_counter()
    import torch

    from bench_proxies import SPACES, proxy_for, read_rows

    from ghnas import data as gdata
    from ghnas.proxies import get_proxy, score

    torch.set_num_threads(1)
    t_import = time.perf_counter() - t0
    archs = read_rows(space, root)[0][0::2][:n]
    spec, _, size = proxy.partition("@")  # 'ghn:200@bench': at bench_proxies' size 'bench'
    size = size or "proxy"
    if size not in SPACES[space]["sizes"]:
        raise SystemExit(f"{proxy}: unknown size {size!r}; valid: {', '.join(SPACES[space]['sizes'])}")
    proxy = spec
    if proxy == "zero-shot":
        prox, bs = get_proxy("zero-shot", space=space), None
    elif "+" in proxy:  # a candidate aggregate: its members as bench_proxies scores them
        from bench_proxies import as_member

        from ghnas.proxies.ensemble import Ensemble

        prox, bs = Ensemble([as_member(m).make() for m in proxy.split("+")], method="log_rank"), None
    else:
        # 'name:N': on N images (e.g. 'ghn:1000'); the GHN proxy uses the space's shipped GHN
        name, _, images = proxy.partition(":")
        prox, bs = proxy_for(name, 0, int(images) if images else None, space=space)
    build = SPACES[space]["sizes"][size]
    t1 = time.perf_counter()
    images = gdata.load("sample") if prox.needs_data else None
    t_data = time.perf_counter() - t1
    t2 = time.perf_counter()
    table = score(archs, space, prox, images, 0, bs, build, progress=False, device="cpu")
    t_score = time.perf_counter() - t2
    assert len(table) == n
    return {"space": space, "proxy": spec if size == "proxy" else f"{spec}@{size}", "size": size, "batch": bs, "n": n,
            "import_s": round(t_import, 3), "data_s": round(t_data, 3), "score_s": round(t_score, 3),
            "s_per_arch": round((t_data + t_score) / n, 4), "label": table.proxy}


def default_proxies() -> list[str]:
    from bench_proxies import PROXIES

    return ["zero-shot", *PROXIES]


def commands(space: str, rows: dict, meta: dict) -> str:
    """The commands that reproduce a table: one for the default proxies when the table has
    them all, one for the rows beyond them (or one for every row otherwise)."""
    out = Path(meta.get("out", OUT)).resolve()
    base = f"python benchmarks/bench_proxy_speed.py --space {space}"
    if out != OUT.resolve():
        base += f" --out {out.relative_to(REPO) if out.is_relative_to(REPO) else out}"
    defaults = default_proxies()
    if not set(defaults) <= set(rows):
        return f"`{base} --proxies {','.join(rows)}`"
    extra = [p for p in rows if p not in defaults]
    return f"`{base}`" + (f", and for the other rows `{base} --proxies {','.join(extra)}`" if extra else "")


def markdown(space: str, rows: dict, meta: dict) -> str:
    lines = [f"# End-to-end proxy speed on {space}", "",
             f"{meta['n']} dev architectures (the first tuning-half rows), a fresh process per proxy, "
             f"one torch thread, the shipped CIFAR-10 sample, no score cache; {meta['machine']}, torch "
             f"{meta['torch']}; load average during the runs: {meta['load']}. `s/arch` = (image loading + "
             "scoring) / n; Python start-up and `import ghnas` (column `import s`) excluded.", "",
             commands(space, rows, meta) + ". `load` is the 1-minute load average after the row's run "
             "(blank: not recorded); above 2 the run shared its core, so its seconds are an upper bound.", "",
             "| proxy | size | batch | import s | images s | scoring s | s/arch | 100 archs (s) | load |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in sorted(rows.values(), key=lambda r: r["s_per_arch"]):
        lines.append(f"| {r['proxy']} | {r['size']} | {r['batch'] or '-'} | {r['import_s']:.2f} | "
                     f"{r['data_s']:.2f} | {r['score_s']:.2f} | {r['s_per_arch']:.3f} | {100 * r['s_per_arch']:.1f} | "
                     f"{r['load'] if 'load' in r else ''} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", choices=["nb201", "darts"], required=True)
    ap.add_argument("--proxies", default=",".join(default_proxies()))
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--root", type=Path, default=REPO.parent)
    ap.add_argument("--out", type=Path, default=OUT,
                    help="results folder; rows merge into its <space>.json, so give another machine its own folder")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.space, args.proxies, args.n, args.root)))
        return 0
    import torch

    from _ghnbench import cpu_model

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.space}.json"
    old = json.loads(path.read_text()) if path.exists() else {"rows": {}, "loads": []}
    rows, loads = old["rows"], old["loads"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for p in [p.strip() for p in args.proxies.split(",") if p.strip()]:
        out = subprocess.run([sys.executable, __file__, "--one", "--space", args.space, "--proxies", p,
                              "--n", str(args.n), "--root", str(args.root)],
                             capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(f"{p}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows[p] = json.loads(out.stdout.strip().splitlines()[-1])
        rows[p]["load"] = round(os.getloadavg()[0], 2)
        loads.append(rows[p]["load"])
        print(f"{args.space} {p}: {rows[p]['s_per_arch']:.3f} s/arch ({100 * rows[p]['s_per_arch']:.1f} s per 100)",
              flush=True)
        meta = {"n": args.n, "machine": f"{cpu_model()}, {os.cpu_count()} CPU cores", "out": str(args.out),
                "torch": torch.__version__, "load": f"{min(loads):.1f}-{max(loads):.1f}"}
        path.write_text(json.dumps({"meta": meta, "rows": rows, "loads": loads}, indent=1) + "\n")
        (args.out / f"{args.space}.md").write_text(markdown(args.space, rows, meta))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
