"""Text embeddings benchmark (issue 16): CoNAL on Sentiment with MiniLM vs TF-IDF features.

    python -m bench.text_embeddings --sentiment ../shared/datasets/sentiment --seeds 5 --out DIR

Everything goes through the CLI (``python -m inference fit``). The crowd's texts and
the test split's texts form one ``--texts`` file (test items have no annotation, so
their label in labels.csv is the classifier's prediction), which scores the classifier
on unseen items. Seed 0 runs ``--texts --text-model X`` as a user would; the other
seeds reuse seed 0's features (the featurizers are deterministic: TF-IDF + SVD is
seeded by --seed, so TF-IDF is re-run with ``--texts`` for every seed) through
``--features F.npy --no-standardise`` — embedding 9,000 sentences costs minutes on
two cores and would give the same matrix.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from inference.features import featurize_texts


def _prepare(sentiment: Path, out: Path) -> tuple[Path, dict[str, str]]:
    """One texts file (crowd items, then test rows as ``test<row>``) and the test gold."""
    texts = out / "texts_all.csv"
    test_gold: dict[str, str] = {}
    with texts.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["item", "text"])
        with (sentiment / "texts.csv").open(encoding="utf-8") as src:
            for row in csv.DictReader(src):
                w.writerow([row["item"], row["text"]])
        with (sentiment / "test_texts.csv").open(encoding="utf-8") as src:
            for row in csv.DictReader(src):
                item = f"test{int(row['row']):05d}"
                w.writerow([item, row["text"]])
                test_gold[item] = row["label"]
    return texts, test_gold


def _fit(args: list[str], out: Path, test_gold: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "inference", "fit", "--model", "conal", "--out", str(out), *args]
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"fit failed: {done.stderr.strip()}")
    info = json.loads((out / "run.json").read_text(encoding="utf-8"))
    with (out / "labels.csv").open(encoding="utf-8") as fh:
        predicted = {row["item"]: row["label"] for row in csv.DictReader(fh) if row["item"] in test_gold}
    test_acc = sum(predicted[i] == test_gold[i] for i in test_gold) / len(test_gold)
    return {
        "aggregated": float(info["accuracy"]["aggregated"]),
        "classifier_train": float(info["accuracy"]["classifier"]),
        "classifier_test": test_acc,
        "seconds": float(info["seconds"]),
        "featurizer": info["features"].get("featurizer", "precomputed"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sentiment", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["auto", "tfidf"], help="--text-model values")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    texts, test_gold = _prepare(args.sentiment, args.out)
    common = ["--annotations", str(args.sentiment / "annotations.csv"), "--gold", str(args.sentiment / "gold.csv")]
    results: dict[str, list[dict[str, Any]]] = {}
    for text_model in args.models:
        runs = results.setdefault(text_model, [])
        tag = text_model.replace("/", "_")
        runs.append(
            _fit(
                [*common, "--texts", str(texts), "--text-model", text_model, "--seed", "0"],
                args.out / f"{tag}-s0",
                test_gold,
            )
        )
        if args.seeds > 1 and text_model != "tfidf":
            with texts.open(encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            matrix, _name = featurize_texts([r["text"] for r in rows], model=text_model)
            np.save(args.out / f"{tag}.npy", matrix)
            (args.out / f"{tag}.txt").write_text("".join(r["item"] + "\n" for r in rows), encoding="utf-8")
        for seed in range(1, args.seeds):
            feats = (
                ["--texts", str(texts), "--text-model", text_model]
                if text_model == "tfidf"
                else [
                    "--features",
                    str(args.out / f"{tag}.npy"),
                    "--items",
                    str(args.out / f"{tag}.txt"),
                    "--no-standardise",
                ]
            )
            runs.append(_fit([*common, *feats, "--seed", str(seed)], args.out / f"{tag}-s{seed}", test_gold))
        for k, r in enumerate(runs):
            print(f"{text_model} seed {k}: {json.dumps(r)}", flush=True)
    lines = [
        "| featurizer | seeds | aggregated % | classifier on test split % | classifier on crowd items % | s / fit |",
        "|---|---|---|---|---|---|",
    ]
    for runs in results.values():

        def pct(key: str, runs: list[dict[str, Any]] = runs) -> str:
            values = [100 * r[key] for r in runs]
            spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
            return f"{statistics.mean(values):.1f}{spread}"

        seconds = statistics.mean(r["seconds"] for r in runs)
        lines.append(
            f"| {runs[0]['featurizer']} | {len(runs)} | {pct('aggregated')} | {pct('classifier_test')} "
            f"| {pct('classifier_train')} | {seconds:.0f} |"
        )
    table = "\n".join(lines)
    (args.out / "table.md").write_text(table + "\n", encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
