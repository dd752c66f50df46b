"""The results tables of docs/RESULTS.md and the README's headline, written from run records.

    python benchmarks/results.py            # rewrite every marked block from docs/runs/
    python benchmarks/results.py --check    # exit 1 when a block differs from what its record gives

A run record is the JSON that ``npad.experiment.write_record`` writes beside a run's outputs
(``results.json`` of an example, ``compare.json`` of ``benchmarks/compare.py``): the command, the
date, the machine, each model's configuration and its per-category rows. Copy it to docs/runs/
under a name of its own; a block in a markdown file

    <!-- results: methods compare_synthetic.json -->
    ... (written by this script) ...
    <!-- /results -->

is then rewritten from it: ``methods`` (one row per method: the means over categories),
``categories`` (one row per method and category), ``headline`` (one sentence: the first run's
means) or ``study`` (the table a study script wrote into its record, as
``benchmarks/defaults_study.py`` does). A table holds the rows of one command only, and names
it: a run with another budget or epoch count is a record, and a table, of its own.

Every number is a percentage except the times (s), the speed (images/s) and the size (MB). The
test set's F1-max threshold that ``experiment.run`` prints is left out: it is chosen on the test
labels and its scale is each method's own, so it says nothing a reader can use (the threshold a
saved model applies is in "False alarms at the default threshold").
"""
import argparse
import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from npad.io import atomic_write  # noqa: E402

RUNS = ROOT / "docs" / "runs"
FILES = [ROOT / "README.md", ROOT / "docs" / "RESULTS.md"]
BLOCK = re.compile(r"(<!-- results: (\w+) ([\w.-]+) -->\n)(.*?)(<!-- /results -->)", re.S)
COLUMNS = [("image_auroc", "image AUROC", 100), ("pixel_auroc", "pixel AUROC", 100), ("aupro", "AUPRO", 100),
           ("train_seconds", "train s", 1), ("images_per_s", "infer img/s", 1), ("model_mb", "model MB", 1)]


def load(name, table="runs"):
    """The run record docs/runs/<name>, checked for the fields the block uses."""
    path = RUNS / name
    if not path.is_file():
        raise SystemExit(f"results: no run record {path}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:                  # JSONDecodeError and UnicodeDecodeError: a truncated or foreign file
        raise SystemExit(f"results: {path} is not a JSON run record ({e})") from None
    if not isinstance(record, dict):
        raise SystemExit(f"results: {path} is not a JSON run record (a {type(record).__name__}, not an object)")
    for key in ("command", "date", "machine", table):
        if key not in record:
            raise SystemExit(f"results: {path} has no '{key}' (not a record of npad.experiment.write_record)")
    return record


def cell(row, key, scale):
    v = row.get(key)
    return "n/a" if v is None or not math.isfinite(v) else f"{v * scale:.2f}" if scale == 100 else f"{v:.1f}"


def backbone(run):
    return (run.get("config") or {}).get("backbone")


def label(run, record):
    """The method, and its backbone where the record's runs differ in it."""
    if len({backbone(r) for r in record["runs"]}) == 1:
        return run["method"]
    return f"{run['method']} ({backbone(run)})"


def source(record):
    shared = {backbone(r) for r in record["runs"]}
    named = f"backbone {shared.pop()}; " if len(shared) == 1 else ""
    return (f"`{record['command']}` ({record['budget']} budget; {named}{record['date']}; {record['machine']}; "
            f"AUROC and AUPRO in %):")


def table(record, per_category):
    head = ["method"] + (["category"] if per_category else []) + [name for _, name, _ in COLUMNS]
    lines = [source(record), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in record["runs"]:
        rows = [r for r in run["rows"] if (r["category"] != "mean") == per_category]
        for r in rows:
            first = [label(run, record)] + ([r["category"]] if per_category else [])
            lines.append("| " + " | ".join(first + [cell(r, k, s) for k, _, s in COLUMNS]) + " |")
    return "\n".join(lines)


def headline(record):
    run = record["runs"][0]
    mean = next(r for r in run["rows"] if r["category"] == "mean")
    cats = [r["category"] for r in run["rows"] if r["category"] != "mean"]
    return (f"`{record['command']}`, {run['method']} on {record['data']} ({', '.join(cats)}): image AUROC "
            f"{cell(mean, 'image_auroc', 100)}, pixel AUROC {cell(mean, 'pixel_auroc', 100)}, AUPRO "
            f"{cell(mean, 'aupro', 100)} (mean over categories), {cell(mean, 'train_seconds', 1)} s of training "
            f"per category and {cell(mean, 'images_per_s', 1)} images/s of scoring ({record['machine']}; "
            f"{record['date']}).")


def study(record):
    """A study's own table (``benchmarks/defaults_study.py`` writes it into its record), under its command."""
    return f"`{record['command']}` ({record['date']}; {record['machine']}):\n\n{record['table'].rstrip()}"


KINDS = {"methods": lambda r: table(r, False), "categories": lambda r: table(r, True), "headline": headline,
         "study": study}


def render(text, where):
    """``text`` with every results block rewritten from its record."""
    def block(m):
        kind, name = m.group(2), m.group(3)
        if kind not in KINDS:
            raise SystemExit(f"results: {where}: unknown block kind '{kind}' (one of {sorted(KINDS)})")
        return m.group(1) + KINDS[kind](load(name, "table" if kind == "study" else "runs")) + "\n" + m.group(5)
    return BLOCK.sub(block, text)


def first_difference(old, new):
    for i, (a, b) in enumerate(zip(old.splitlines(), new.splitlines()), 1):
        if a != b:
            return f"line {i}: the docs say\n    {a}\n  the run record gives\n    {b}"
    return "the number of lines differs"


def main(argv=None, files=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 where the docs differ from the runs")
    args = p.parse_args(argv)
    stale = []
    for path in files or FILES:
        text = path.read_text(encoding="utf-8")
        new = render(text, path.name)
        if new == text:
            continue
        if args.check:
            stale.append(f"{path.name}: {first_difference(text, new)}")
        else:
            with atomic_write(path, "w", encoding="utf-8") as f:
                f.write(new)
            print(f"rewrote {path}")
    if stale:
        print("results: the docs differ from their run records (python benchmarks/results.py rewrites them):\n"
              + "\n".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
