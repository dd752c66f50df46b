"""benchmarks/results.py: the docs' result tables equal what their run records give."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("results_script", ROOT / "benchmarks" / "results.py")
results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results)

RECORD = dict(command="python benchmarks/compare.py --methods padim cflow --out runs/x", date="2026-12-05",
              machine="x86_64, 2 cores", data="npad synthetic", budget="quick",
              runs=[dict(method=m, config=dict(backbone="efficientnet_lite0"), rows=[
                  dict(category="gear", image_auroc=a, pixel_auroc=0.98, aupro=0.9, image_threshold=5e6,
                       train_seconds=30.0, images_per_s=12.0, model_mb=7.0),
                  dict(category="weave", image_auroc=a - 0.1, pixel_auroc=0.96, aupro=float("nan"),
                       image_threshold=1.0, train_seconds=40.0, images_per_s=10.0, model_mb=7.0),
                  dict(category="mean", image_auroc=a - 0.05, pixel_auroc=0.97, aupro=0.9, image_threshold=2.5e6,
                       train_seconds=35.0, images_per_s=11.0, model_mb=7.0)]) for m, a in [("PaDiM", 0.9),
                                                                                          ("CFlow", 0.99)]])


def test_the_docs_match_their_run_records():
    """Every marked block of README.md and docs/RESULTS.md is what its record in docs/runs/ gives."""
    assert results.main(["--check"]) == 0


def test_every_kept_record_is_shown():
    """A record in docs/runs/ that no block uses is a number no reader sees: keep none."""
    used = {m.group(3) for f in results.FILES for m in results.BLOCK.finditer(f.read_text(encoding="utf-8"))}
    kept = {p.name for p in results.RUNS.glob("*.json")}
    assert kept <= used, f"records in docs/runs/ that no block shows: {sorted(kept - used)}"


@pytest.fixture
def docs(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RUNS", tmp_path)
    (tmp_path / "r.json").write_text(json.dumps(RECORD), encoding="utf-8")
    doc = tmp_path / "doc.md"
    doc.write_text("# x\n<!-- results: methods r.json -->\nold\n<!-- /results -->\n"
                   "<!-- results: categories r.json -->\n<!-- /results -->\n"
                   "Headline: <!-- results: headline r.json -->\n<!-- /results -->\ntail\n", encoding="utf-8")
    return doc


def test_tables_are_written_in_percent_with_the_command_and_no_test_set_threshold(docs):
    assert results.main([], files=[docs]) == 0
    text = docs.read_text(encoding="utf-8")
    assert text.startswith("# x\n") and text.endswith("tail\n")
    assert "| PaDiM | 85.00 | 97.00 | 90.00 | 35.0 | 11.0 | 7.0 |" in text
    assert "| CFlow | weave | 89.00 | 96.00 | n/a | 40.0 | 10.0 | 7.0 |" in text
    assert ("`python benchmarks/compare.py --methods padim cflow --out runs/x` (quick budget; backbone "
            "efficientnet_lite0; 2026-12-05") in text
    assert "F1-max" not in text and "2500000" not in text and "old" not in text
    assert "image AUROC 85.00, pixel AUROC 97.00, AUPRO 90.00" in text
    assert results.main(["--check"], files=[docs]) == 0


def test_check_names_a_number_that_differs_from_its_run(docs, capsys):
    results.main([], files=[docs])
    docs.write_text(docs.read_text(encoding="utf-8").replace("| 85.00 |", "| 86.00 |"), encoding="utf-8")
    before = docs.read_text(encoding="utf-8")
    assert results.main(["--check"], files=[docs]) == 1
    err = capsys.readouterr().err
    assert "doc.md: line" in err and "86.00" in err and "85.00" in err
    assert docs.read_text(encoding="utf-8") == before            # --check writes nothing


def test_a_missing_or_foreign_record_is_named(docs, tmp_path):
    docs.write_text("<!-- results: methods nowhere.json -->\n<!-- /results -->\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="no run record .*nowhere.json"):
        results.main(["--check"], files=[docs])
    (tmp_path / "other.json").write_text(json.dumps(dict(rows=[])), encoding="utf-8")
    docs.write_text("<!-- results: methods other.json -->\n<!-- /results -->\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="other.json has no 'command'"):
        results.main(["--check"], files=[docs])
    (tmp_path / "cut.json").write_text(json.dumps(RECORD)[:50], encoding="utf-8")      # a truncated record
    docs.write_text("<!-- results: methods cut.json -->\n<!-- /results -->\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="cut.json is not a JSON run record"):
        results.main(["--check"], files=[docs])
    (tmp_path / "list.json").write_text("[1, 2]", encoding="utf-8")
    docs.write_text("<!-- results: methods list.json -->\n<!-- /results -->\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="list.json is not a JSON run record \\(a list"):
        results.main(["--check"], files=[docs])
    docs.write_text("<!-- results: pie r.json -->\n<!-- /results -->\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="unknown block kind 'pie'"):
        results.main(["--check"], files=[docs])
