"""The documents' tables, rendered from the committed benchmark results.

    python benchmarks/tables.py            # rewrite the tables
    python benchmarks/tables.py --check    # exit 1 if one differs

Each table stands in README.md or a docs/ page between
`<!-- table:NAME -->` and `<!-- /table:NAME -->`, and `TABLES[NAME]`
renders it from the JSON lines in `results/`. A figure in those blocks is
never typed by hand: a test fails when a block differs from what this
renders.
"""

import argparse
import functools
import glob
import json
import os
import re
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETWORKS = {"efficientnet_lite0": "EfficientNet-Lite0, ImageNet",
            "all_minilm_l6_v2": "all-MiniLM-L6-v2"}
TASK_ORDER = ("digits", "docstrings", "lfw_faces", "rotten_tomatoes")


def read(name, results=os.path.join(REPO, "results")):
  with open(os.path.join(results, f"{name}.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


def _pct(value):
  return f"{100 * value:.1f}%"


def _spread(values):
  """mean (min–max) in percent; the value alone for one seed."""
  if not values:
    return "–"
  if len(values) == 1:
    return _pct(values[0])
  return (f"{_pct(statistics.mean(values))} ({100 * min(values):.1f}–"
          f"{100 * max(values):.1f})")


def _default_cell(arms):
  """The default arm's spread, in bold when its mean is at least every
  other arm's ({arm: [values over seeds]})."""
  default = _spread(arms["default"])
  best = max(statistics.mean(v) for a, v in arms.items()
             if v and a != "default")
  return (f"**{default}**" if statistics.mean(arms["default"]) >= best
          else default)


def real_weights_tasks(rows):
  """Per task: default, probe, scratch and the anchors over seeds."""
  tasks = [r for r in rows if r.get("arm") == "task"]
  lines = ["| task | network | train / val / test | seeds | default | probe "
           "| scratch | TF-IDF + LR | Model Maker recipe |",
           "|---|---|---|---|---|---|---|---|---|"]
  for task in sorted({r["task"] for r in tasks}, key=TASK_ORDER.index):
    mine = sorted((r for r in tasks if r["task"] == task),
                  key=lambda r: r["seed"])
    arms = {a: [r[a] for r in mine if a in r] for a in
            ("default", "probe", "scratch", "tfidf", "modelmaker")}
    default = _default_cell(arms)
    sizes = mine[0]["sizes"]
    name = task + (" (kept aside)" if mine[0].get("kept_aside") else "")
    lines.append(
        f"| {name} | {NETWORKS[mine[0]['model']]} | {sizes['train']:,} / "
        f"{sizes['validation']:,} / {sizes['test']:,} | {len(mine)} | "
        f"{default} | {_spread(arms['probe'])} | {_spread(arms['scratch'])} "
        f"| {_spread(arms['tfidf'])} | {_spread(arms['modelmaker'])} |")
  return "\n".join(lines)


def _export_rows(row, mediapipe=True, variant="variant"):
  """One row per TFLite file; `mediapipe`: with the MediaPipe column;
  `variant`: the first column's heading."""
  mp_head, mp_rule = (" MediaPipe agreement |", "---|") if mediapipe else (
      "", "")
  lines = [f"| {variant} | accuracy | agreement with Keras |" + mp_head +
           " size | gzipped | latency 1 / 2 threads |",
           "|---|---|---|" + mp_rule + "---|---|---|",
           f"| Keras | {_pct(row['keras_accuracy'])} | |" +
           (" |" if mediapipe else "") + " | | |"]
  for variant, r in row["tflite"].items():
    agreement = r.get("mediapipe_agreement")
    column = ((f" {_pct(agreement)} |" if agreement is not None else " |")
              if mediapipe else "")
    lines.append(
        f"| {variant} | {_pct(r['accuracy'])} | {_pct(r['agreement'])} |"
        f"{column} {r['size_bytes'] / 1e6:.1f} MB | "
        f"{r['compressed_bytes'] / 1e6:.1f} MB | "
        f"{r['latency_ms_1_thread']:.2f} / {r['latency_ms']:.2f} ms |")
  return "\n".join(lines)


# The seed of export rows recorded before the rows said theirs: main.py's
# default, which the benchmark left alone then.
DEFAULT_SEED = 42


def _seed(row):
  return row.get("seed", DEFAULT_SEED)


def real_weights_exports_224(rows, task, arm="exports_head_only",
                             seed=DEFAULT_SEED):
  """The head-only (or, `arm` "exports_fine_tuned", default) run's TFLite
  files at 224 px, `task`, `seed`."""
  (row,) = [r for r in rows if r.get("arm") == arm and _seed(r) == seed
            and r["image_size"] == 224 and r["task"] == task][-1:]
  return _export_rows(row)


def real_weights_exports_224_seeds(rows, task, arm="exports_fine_tuned"):
  """int8 against Keras per seed of `arm`'s 224 px rows of `task`, and the
  mean (min–max) over the seeds."""
  runs = sorted((r for r in rows if r.get("arm") == arm
                 and r["image_size"] == 224 and r["task"] == task),
                key=_seed)
  lines = ["| seed | phase kept | Keras | int8 | int8 − Keras | int8 "
           "agreement with Keras | MediaPipe int8 agreement | layers kept in "
           "float | int8 / float32 latency, 1 thread | noise check |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  figures = {k: [] for k in ("keras", "int8", "drop", "agreement",
                             "mediapipe", "noise")}
  for r in runs:
    int8, float32 = r["tflite"]["int8"], r["tflite"]["float32"]
    values = {"keras": r["keras_accuracy"], "int8": int8["accuracy"],
              "drop": int8["accuracy"] - r["keras_accuracy"],
              "agreement": int8["agreement"],
              "mediapipe": int8["mediapipe_agreement"],
              "noise": r["noise_check"]["agreement"]}
    for k, v in values.items():
      figures[k].append(v)
    layers = r.get("int8_fallback", {}).get("float_layers", 0)
    lines.append(
        f"| {_seed(r)} | {r['kept']} | {_pct(values['keras'])} | "
        f"{_pct(values['int8'])} | {100 * values['drop']:+.1f} points | "
        f"{_pct(values['agreement'])} | {_pct(values['mediapipe'])} | "
        f"{layers} | {int8['latency_ms_1_thread']:.2f} / "
        f"{float32['latency_ms_1_thread']:.2f} ms | "
        f"{_pct(values['noise'])} |")
  if len(runs) > 1:
    lines.append(
        f"| mean ({len(runs)} seeds) | | {_spread(figures['keras'])} | "
        f"{_spread(figures['int8'])} | {_points(figures['drop'])} | "
        f"{_spread(figures['agreement'])} | {_spread(figures['mediapipe'])}"
        f" | | | {_spread(figures['noise'])} |")
  return "\n".join(lines)


def real_weights_exports(rows, task):
  """The default run's TFLite files, seed 0 of `task`."""
  (row,) = [r for r in rows if r.get("arm") == "exports"
            and r["task"] == task][-1:]
  return _export_rows(row)


def _arms(rows, arms, header, figures):
  """A table of arms per figure over seeds (mean and range), each arm but
  the last minus the last per seed, and the phase each run kept. `header`
  names the columns after the first.

  Returns:
    (table lines, {arm: "kept" per seed}).
  """
  runs = [r for r in rows if r.get("arm") in arms]
  seeds = sorted({r["seed"] for r in runs})
  by = {(r["arm"], r["seed"]): r for r in runs}
  reference = arms[-1]
  lines = ["| " + " | ".join(header) + " |",
           "|---" * len(header) + "|"]
  for key, what in figures:
    values = {a: [by[a, s][key] for s in seeds if (a, s) in by]
              for a in arms}
    gains = [[by[a, s][key] - by[reference, s][key] for s in seeds
              if (a, s) in by and (reference, s) in by] for a in arms[:-1]]
    lines.append(f"| {what} ({len(values[reference])} seeds) | " + " | ".join(
        [_spread(values[a]) for a in arms] + [_points(g) for g in gains])
                 + " |")
  kept = {a: ", ".join(str(by[a, s].get("kept")) for s in seeds
                       if (a, s) in by) for a in arms}
  return lines, kept


def imbalance(rows, test="45 per digit",
              rarest="digit 9 (10 training images in the long tail)"):
  """--class_weight=auto and logit_adjust against none, per figure over
  seeds, each one's gain over none, per seed, and the balanced_data
  reference (as many training examples, spread evenly) with its headroom
  over none. `test`, `rarest`: what the test split holds and which class
  is rarest in training, for the header."""
  arms = ("auto", "logit_adjust", "balanced_data", "none")
  lines, kept = _arms(
      rows, arms,
      [f"test (balanced, {test})", "`auto` (weights)", "`logit_adjust`",
       "balanced training data (reference)", "`none`", "auto − none",
       "logit_adjust − none", "headroom: balanced data − none"],
      (("accuracy", "accuracy"), ("macro_f1", "macro-F1"),
       ("smallest_recall", f"recall of {rarest}")))
  lines.append("| seeds with macro-F1 above `none`'s | | | | | " + " | ".join(
      _seeds_ahead(rows, arm, "none", "macro_f1")
      for arm in ("auto", "logit_adjust", "balanced_data")) + " |")
  if any(r.get("kept") for r in rows if r.get("arm") in arms):
    lines.append("| phase kept, per seed | " + " | ".join(
        kept[a] for a in arms) + " | | | |")
  return "\n".join(lines)


def _seeds_ahead(rows, arm, other, key):
  """"N of M": of the M seeds both `arm` and `other` ran, on how many
  `arm`'s `key` is above `other`'s."""
  values = {a: {r["seed"]: r[key] for r in rows if r.get("arm") == a}
            for a in (arm, other)}
  seeds = sorted(set(values[arm]) & set(values[other]))
  ahead = sum(values[arm][s] > values[other][s] for s in seeds)
  return f"{ahead} of {len(seeds)}"


def multi_label(rows):
  """The --multi_label run against one-vs-rest logistic regression on the
  same frozen features, per figure over seeds, and the gain per seed."""
  lines, kept = _arms(
      rows, ("run", "ovr"),
      ["test", "`--multi_label`, default flags",
       "one-vs-rest logistic regression", "run − LR"],
      (("macro_f1", "macro-F1"), ("micro_f1", "micro-F1"),
       ("mean_average_precision", "mean average precision"),
       ("accuracy", "exact match")))
  lines.append(f"| phase kept, per seed | {kept['run']} | | |")
  return "\n".join(lines)


def label_errors(rows):
  """How many of the deliberately flipped labels the review ranks early,
  over seeds."""
  runs = [r for r in rows if r.get("arm") == "review"]
  if not runs:
    return "–"
  first = runs[0]
  lines = [f"| {len(runs)} seeds, {first['flipped']} of "
           f"{first['sizes']['train'] + first['sizes']['validation']} "
           "training and validation labels flipped | mean (min–max) |",
           "|---|---|"]
  for key, what in (
      ("found_in_top", "flipped images in the first 10% of the examples "
       "reviewed (a blind ranking: 10%)"),
      ("found_at_all", "flipped images listed at all (predicted as "
       "another class)"),
      ("precision_first", "flips among the first rows, as many rows as "
       "flips"),
      ("test_accuracy", "test accuracy (correct labels)")):
    lines.append(f"| {what} | {_spread([r[key] for r in runs])} |")
  return "\n".join(lines)


def word_embedding(rows, real_rows):
  """Per task: the word-embedding model, TF-IDF + LR and the MiniLM
  default run (real_weights, same splits, on the seeds it ran), and its
  float32 file."""
  tasks = [r for r in rows if r.get("arm") == "task"]
  lines = ["| task | train / val / test | seeds | average word embedding | "
           "TF-IDF + LR | difference | all-MiniLM-L6-v2 (default) | "
           "float32 file | MediaPipe agreement |",
           "|---|---|---|---|---|---|---|---|---|"]
  for task in sorted({r["task"] for r in tasks}, key=TASK_ORDER.index):
    mine = sorted((r for r in tasks if r["task"] == task),
                  key=lambda r: r["seed"])
    seeds = {r["seed"] for r in mine}
    minilm = [r["default"] for r in real_rows if r.get("arm") == "task"
              and r["task"] == task and r["seed"] in seeds]
    lite = next((r["float32"] for r in mine if "float32" in r), {})
    sizes = mine[0]["sizes"]
    name = task + (" (kept aside)" if mine[0].get("kept_aside") else "")
    lines.append(
        f"| {name} | {sizes['train']:,} / {sizes['validation']:,} / "
        f"{sizes['test']:,} | {len(mine)} | "
        f"{_spread([r['accuracy'] for r in mine])} | "
        f"{_spread([r['tfidf'] for r in mine])} | "
        f"{_points([r['accuracy'] - r['tfidf'] for r in mine])} | "
        f"{_spread(minilm)}{_seed_count(minilm, mine)} | "
        f"{lite.get('size_bytes', 0) / 1e3:.0f} KB | "
        f"{_pct(lite['mediapipe_agreement']) if lite else '–'} |")
  return "\n".join(lines)


def text_features(rows):
  """Per text task: linear models on MiniLM's frozen features (per
  sequence length, and the recipe's own head fit with and without class
  weights) against TF-IDF + LR, over the same seeds."""
  tasks = [r for r in rows if r.get("arm") == "task"]
  names = sorted({r["task"] for r in tasks}, key=TASK_ORDER.index)
  mine = {t: [r for r in tasks if r["task"] == t] for t in names}
  lengths = sorted({int(k.split("_")[1]) for r in tasks for k in r
                    if k.startswith("probe_") and k.count("_") == 1})

  def spread(key, of=None):
    return [_spread([(of or (lambda r: r[key]))(r) for r in mine[t]
                     if key in r]) for t in names]

  def points(key, minus):
    return [_points([r[key] - r[minus] for r in mine[t]])
            if key in mine[t][0] else "–" for t in names]

  own = {t: sorted(int(k.split("_")[1]) for k in mine[t][0]
                  if k.startswith("probe_") and k.count("_") == 1)
         for t in names}
  body = [(f"probe, {n} tokens", spread(f"probe_{n}")) for n in lengths]
  body += [
      ("TF-IDF + LR", spread("tfidf")),
      ("probe at the run's length − TF-IDF",
       [_points([r[f"probe_{own[t][0]}"] - r["tfidf"] for r in mine[t]])
        for t in names])]
  longer = [t for t in names if len(own[t]) > 1]
  if longer:
    body.append((
        f"probe, {own[longer[0]][-1]} − {own[longer[0]][0]} tokens",
        [_points([r[f"probe_{own[t][-1]}"] - r[f"probe_{own[t][0]}"]
                  for r in mine[t]]) if t in longer else "–"
         for t in names]))
  body += [
      ("the recipe's head fit, unweighted", spread("head_none")),
      ("the recipe's head fit, `--class_weight=auto`", spread("head_auto")),
      ("auto − unweighted, accuracy", points("head_auto", "head_none")),
      ("auto − unweighted, balanced accuracy",
       points("head_auto_balanced", "head_none_balanced"))]
  header = ["test accuracy"] + [
      f"{t}{' (kept aside)' if mine[t][0].get('kept_aside') else ''}, "
      f"{len(mine[t])} seeds" for t in names]
  return _markdown(header, [f"| {what} | " + " | ".join(cells) + " |"
                            for what, cells in body])


def _seed_count(values, rows):
  """", N seeds" when `values` (another run's, on the seeds of `rows`
  that it has) cover fewer seeds than `rows`; else nothing."""
  return f", {len(values)} seeds" if values and len(values) < len(rows) else ""


def _markdown(columns, rows):
  """A markdown table: its header from `columns`, then `rows` (lines)."""
  return "\n".join(["| " + " | ".join(columns) + " |",
                    "|" + "---|" * len(columns), *rows])


def _seconds(value):
  return f"{value:,.2f} s" if value < 100 else f"{value:,.0f} s"


def head_phase_probe(rows):
  """`probe.fit` against plain scikit-learn, per problem size."""
  return _markdown(
      ("N", "D", "classes", "probe.fit", "scikit-learn, cold", "ratio",
       "validation accuracy, probe.fit / scikit-learn"),
      [f"| {r['n']:,} | {r['dim']:,} | {r['classes']} | "
       f"{_seconds(r['seconds']['probe'])} | "
       f"{_seconds(r['seconds']['sklearn'])} | {r['ratio']:.2f} | "
       f"{_pct(r['validation_accuracy']['probe'])} / "
       f"{_pct(r['validation_accuracy']['sklearn'])} |"
       for r in rows if r.get("table") == "probe"])


def head_phase_epochs(rows):
  """Phase 1 trained in the loop, with and without the feature cache."""
  lines = ["| model | backbone | training images | head epochs | images/s, "
           "no cache | images/s, cached | speed-up | per epoch after the "
           "feature pass | best validation accuracy, no cache / cached | "
           "cached epochs to reach the uncached best | the linear probe "
           "instead: seconds, validation accuracy |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    if "epochs" not in r or r.get("table"):
      continue
    rate, best = r["images_per_second"], r["best_validation_accuracy"]
    reach = r["cached_epochs_to_uncached_best"]
    lines.append(
        f"| {r['model']}, {r['image_size']} px | {r['backbone']} | "
        f"{r['train_images']:,} | {r['epochs']} | {rate['uncached']:,.0f} | "
        f"{rate['cached']:,.0f} | {r['speedup']:.1f}× | "
        f"{r['speedup_per_epoch_after_feature_pass']:.1f}× | "
        f"{_pct(best['uncached'])} / {_pct(best['cached'])} | "
        f"{reach if reach else 'not reached'} of {r['epochs']} | "
        f"{_seconds(r['probe_seconds'])}, {_pct(best['probe'])} |")
  return "\n".join(lines)


def head_phase_whole_process(rows):
  """main.py head-only on 5,000 images, cached against uncached: median
  (min–max) over the runs."""
  mine = [r for r in rows if r.get("table") == "whole_process"]
  def spread(values, fmt):
    values = list(values)
    if len(values) == 1:
      return fmt(values[0])
    return (f"{fmt(statistics.median(values))} ({fmt(min(values))}–"
            f"{fmt(max(values))})")
  return _markdown(
      ("runs", "`--feature_cache=auto`, median (min–max)",
       "`--feature_cache=off`", "ratio"),
      [f"| {len(mine)} | "
       f"{spread((r['seconds']['cached'] for r in mine), _seconds)} | "
       f"{spread((r['seconds']['uncached'] for r in mine), _seconds)} | "
       f"{spread((r['speedup'] for r in mine), lambda v: f'{v:.2f}×')} |"]
      if mine else [])


def pipeline(rows):
  """The input pipeline's images/s against the training step's."""
  def rate(r, key):
    value = r[f"{key}_images_per_second"]
    return f"{value:,} ({value / r['step_images_per_second']:.1f}×)"
  return _markdown(
      ("model, input size", "batch", "step consumes",
       "first epoch over files: decode + resize", "later epochs: cached",
       "in memory (embedded task)"),
      [f"| {r['model']}, {r['image_size']} px | {r['batch_size']} | "
       f"{r['step_images_per_second']:,} images/s | "
       f"{rate(r, 'files_cold')} | {rate(r, 'files_cached')} | "
       f"{rate(r, 'pipeline')} |" for r in rows])


RECIPE_ARMS = (("baseline", "keras.io guide, `model.fit`"),
               ("fit_recipe_optimizer", "`fit`, recipe's optimizer"),
               ("recipe", "recipe"), ("recipe_every_epoch",
                                      "recipe, every epoch"))


def recipe_vs_baseline(rows):
  """The recipe against the keras.io guide: seconds and test accuracy."""
  arms = [(k, w) for k, w in RECIPE_ARMS if k in rows[0]["seconds"]]
  lines = ["| case | training images | " + " | ".join(
      f"{w}: seconds (× the guide's), test accuracy" for _, w in arms) + " |",
           "|---|---|" + "---|" * len(arms)]
  for r in rows:
    cells = []
    for key, _ in arms:
      ratio = r["time_ratio"].get(key)
      cells.append(f"{r['seconds'][key]:,.1f} s" +
                   (f" ({ratio:.2f}×)" if ratio else "") +
                   f", {_pct(r['test_accuracy'][key])}")
    lines.append(f"| {r['case']} | {r['train_images']:,} | " +
                 " | ".join(cells) + " |")
  return "\n".join(lines)


def transfer_suite(rows):
  """Four arms on the synthetic-source tasks, mean (min–max) over seeds."""
  runs = [r for r in rows if "seed" in r and "default" in r]
  lines = ["| task | seeds | default | probe | scratch | tuned | runs that "
           "set the source aside |", "|---|---|---|---|---|---|---|"]
  for task in dict.fromkeys(r["task"] for r in runs):
    mine = [r for r in runs if r["task"] == task]
    arms = {a: [r[a] for r in mine] for a in
            ("default", "probe", "scratch", "tuned")}
    default = _default_cell(arms)
    lines.append(
        f"| {task} | {len(mine)} | {default} | {_spread(arms['probe'])} | "
        f"{_spread(arms['scratch'])} | {_spread(arms['tuned'])} | "
        f"{sum(r.get('start') == 'random' for r in mine)} |")
  return "\n".join(lines)


def compression(rows):
  """Per sparsity, block and file: accuracy, agreement, size, latency."""
  lines = ["| sparsity | block | file | test accuracy | agreement with Keras "
           "| size | gzipped | gzipped vs unpruned | latency 1 / 2 threads |",
           "|---|---|---|---|---|---|---|---|---|"]
  files = [r for r in rows if "prune_sparsity" in r]
  unpruned = {r["variant"]: r["compressed_bytes"] for r in files
              if not r["prune_sparsity"]}
  for r in files:
    base = unpruned.get(r["variant"])
    ratio = f"{r['compressed_bytes'] / base:.2f}" if base else "–"
    block = r["prune_block"] if r["prune_sparsity"] else ""
    lines.append(
        f"| {r['prune_sparsity']:g} | {block} | {r['variant']} | "
        f"{_pct(r['accuracy'])} | {_pct(r['agreement'])} | "
        f"{_size(r['size_bytes'])} | {_size(r['compressed_bytes'])} | "
        f"{ratio} | {r['latency_ms_1_thread']:.2f} / "
        f"{r['latency_ms_2_threads']:.2f} ms |")
  return "\n".join(lines)


def _size(n):
  return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} KB"


def cpu_label(row):
  """The SIMD features that decide int8 speed, as a row's stamp records
  them (rows from before the stamp recorded them: "not recorded")."""
  features = row.get("cpu_features")
  if features is None:
    return "CPU features not recorded"
  for feature, label in (("amx_int8", "AMX int8"),
                         ("avx512_vnni", "AVX-512 VNNI"),
                         ("avx_vnni", "AVX-VNNI"), ("i8mm", "Arm i8mm"),
                         ("asimddp", "Arm dot product")):
    if feature in features:
      return label
  return "AVX2, no VNNI" if "avx2" in features else "no int8 dot product"


def tflite_latency(rows):
  """Each TFLite file of a finished run: size and median latency per
  thread count, per kind of CPU (the latest rows of each)."""
  files = sorted({r["file"] for r in rows})
  threads = sorted({r["threads"] for r in rows})
  cpus = list(dict.fromkeys(cpu_label(r) for r in rows))
  by = {(r["file"], r["threads"], cpu_label(r)): r for r in rows}
  first = {f: next(r for r in rows if r["file"] == f) for f in files}

  def cell(f, cpu):
    return " / ".join(f"{by[f, t, cpu]['median_ms']:.2f}"
                      if (f, t, cpu) in by else "–" for t in threads) + " ms"

  return _markdown(
      ["file", "input", "size",
       *(f"{cpu}: {' / '.join(map(str, threads))} threads" for cpu in cpus)],
      [f"| {f} | {first[f]['input']} | {_size(first[f]['size_bytes'])} | " +
       " | ".join(cell(f, cpu) for cpu in cpus) + " |" for f in files])


def int8_families(rows):
  """Per family, trained from random weights on the source task: Keras,
  int8 before and after the fallback, the layers kept in float, sizes and
  latency (trained files, and the architecture at the latency size)."""
  lines = []
  for r in rows:
    if "family" not in r:
      continue
    trained, untrained = r["latency_ms"], r.get("latency_ms_untrained", {})
    at = untrained.get("image_size")
    lines.append(
        f"| {r['family']}, {r['image_size']} px | {_pct(r['keras_accuracy'])}"
        f" | {_pct(r['int8_before'])} ({_pct(r['agreement_before'])}) | "
        f"{_pct(r['int8_after'])} ({_pct(r['agreement_after'])}) | "
        f"{r['float_layers']}"
        f"{' of ' + str(r['quantized_layers']) if r['quantized_layers'] else ''}"
        f" | {_size(r['size_bytes']['float32'])} / "
        f"{_size(r['size_bytes']['int8'])} | "
        f"{trained['float32']['1']:.2f} / {trained['int8']['1']:.2f} ms | " +
        (f"{untrained['float32']['1']:.2f} / {untrained['int8']['1']:.2f} ms "
         f"at {at} px" if at else "–") + f" | {cpu_label(r)} |")
  return _markdown(
      ["family, input", "Keras test", "int8 before the fallback (agreement)",
       "int8 after (agreement)", "layers kept in float",
       "size float32 / int8", "1 thread float32 / int8",
       "untrained, 1 thread float32 / int8", "CPU"], lines)


def real_weights_pruning(rows):
  """Lite0 pruned 50% one-shot against unpruned, per task (seed 0)."""
  return _markdown(
      ("task", "sparsity", "test accuracy, pruned / unpruned",
       "float32 gzipped, pruned / unpruned", "run seconds"),
      [f"| {r['task']} | {_pct(r['sparsity'])} | {_pct(r['test'])} / "
       f"{_pct(r['unpruned_test'])} | {_size(r['gzipped_float32'])} / "
       f"{_size(r['unpruned_gzipped_float32'])} | {r['seconds']:,.0f} s |"
       for r in rows if r.get("arm") == "pruning"])

DEMO_SEED = 42


def quickstart(rows):
  """The demo's figures per kind of CPU: its own seed, and the spread over
  seeds (float kernels differ between CPUs in the last bits, which can tip
  the recipe's choices on one seed)."""
  runs = sorted((r for r in rows if r.get("arm") == "run"),
                key=lambda r: (r["seed"] != DEMO_SEED, r["seed"]))
  cpus = list(dict.fromkeys(cpu_label(r) for r in runs))
  per_cpu = {cpu: [r for r in runs if cpu_label(r) == cpu] for cpu in cpus}
  demos = {cpu: _demo_run(per_cpu[cpu]) for cpu in cpus}
  test = runs[0]["sizes"]["test"]
  columns = [""]
  for cpu in cpus:
    columns += [f"{cpu}: `make demo` (seed {DEMO_SEED})",
                f"{cpu}: {len(per_cpu[cpu])} seeds, mean (min–max)"]
  lines = []
  for key, what in (
      ("test", f"transfer (ImageNet Lite0, the default recipe), test "
       f"({test} images)"),
      ("probe_validation", "the phase-1 linear probe alone, validation"),
      ("scratch_test", "from scratch, same network, recipe and budget "
       "(`--compare_scratch`), test")):
    cells = []
    for cpu in cpus:
      cells += [_pct(demos[cpu][key]) if demos[cpu] else "–",
                _spread([r[key] for r in per_cpu[cpu]])]
    lines.append(f"| {what} | " + " | ".join(cells) + " |")
  cells = []
  for cpu in cpus:
    cells += [demos[cpu]["kept"] if demos[cpu] else "–",
              ", ".join(f"{r['kept']} ({r['seed']})" for r in per_cpu[cpu])]
  lines.append("| phase the run kept | " + " | ".join(cells) + " |")
  cells = []
  for cpu in cpus:
    commits = ", ".join(dict.fromkeys(r["commit"] for r in per_cpu[cpu]))
    cells += [demos[cpu]["commit"] if demos[cpu] else "–", commits]
  lines.append("| code (commit) | " + " | ".join(cells) + " |")
  return _markdown(columns, lines)


def _demo_run(runs):
  """The latest run of the demo's seed among `runs`, or None."""
  return next((r for r in reversed(runs) if r["seed"] == DEMO_SEED), None)


def quickstart_exports(rows):
  """The TFLite files of the latest recorded run of the demo's seed, with
  the kind of CPU that ran it."""
  demo = _demo_run([r for r in rows if r.get("arm") == "run"])
  return _export_rows({"keras_accuracy": demo["test"],
                       "tflite": demo["tflite"]}, mediapipe=False,
                      variant=f"variant ({cpu_label(demo)})")


def _points(values):
  """mean (min–max) in points, signed."""
  if not values:
    return "–"
  mean = 100 * statistics.mean(values)
  if len(values) == 1:
    return f"{mean:+.1f} points"
  return (f"{mean:+.1f} points ({100 * min(values):+.1f} to "
          f"{100 * max(values):+.1f})")


TABLES = {
    "real_weights_tasks": lambda: real_weights_tasks(read("real_weights")),
    "real_weights_exports_digits":
        lambda: real_weights_exports(read("real_weights"), "digits"),
    "real_weights_exports_224_digits":
        lambda: real_weights_exports_224(read("real_weights"), "digits"),
    "real_weights_exports_224_lfw_faces":
        lambda: real_weights_exports_224(read("real_weights"), "lfw_faces"),
    "real_weights_exports_224_digits_fine_tuned":
        lambda: real_weights_exports_224(read("real_weights"), "digits",
                                         "exports_fine_tuned"),
    "real_weights_exports_224_digits_fine_tuned_seeds":
        lambda: real_weights_exports_224_seeds(read("real_weights"),
                                               "digits"),
    "quickstart": lambda: quickstart(read("quickstart")),
    "quickstart_exports": lambda: quickstart_exports(read("quickstart")),
    "imbalance": lambda: imbalance(read("imbalance")),
    "imbalance_docstrings": lambda: imbalance(
        read("imbalance_docstrings"), "15 per module",
        "pathlib (5 training docstrings in the long tail)"),
    "label_errors": lambda: label_errors(read("label_errors")),
    "multi_label": lambda: multi_label(read("multi_label")),
    "text_features": lambda: text_features(read("text_features")),
    "word_embedding": lambda: word_embedding(read("word_embedding"),
                                             read("real_weights")),
    "head_phase_probe": lambda: head_phase_probe(read("head_phase")),
    "head_phase_epochs": lambda: head_phase_epochs(read("head_phase")),
    "head_phase_whole_process":
        lambda: head_phase_whole_process(read("head_phase")),
    "pipeline": lambda: pipeline(read("pipeline")),
    "recipe_vs_baseline":
        lambda: recipe_vs_baseline(read("recipe_vs_baseline")),
    "transfer_suite": lambda: transfer_suite(read("transfer_suite")),
    "compression": lambda: compression(read("compression")),
    "real_weights_pruning":
        lambda: real_weights_pruning(read("real_weights")),
    "tflite_latency": lambda: tflite_latency(read("tflite_latency")),
    "int8_families": lambda: int8_families(read("int8_families")),
}
BLOCK = re.compile(r"(<!-- table:(\w+) -->\n)(.*?)(<!-- /table:\2 -->)",
                   re.S)


# A figure in running text: `<!-- v QUERY -->figure<!-- /v -->`, the
# figure rendered from the query (see `value`).
VALUE = re.compile(r"(<!-- v ([^>]+?) -->)(.*?)(<!-- /v -->)", re.S)
FORMATS = {
    "pct": lambda v: f"{100 * v:.1f}%",
    "points": lambda v: f"{100 * abs(v):.1f}",
    "signed_points": lambda v: f"{100 * v:+.1f}",
    "ms": lambda v: f"{v:.2f} ms",
    "s": lambda v: f"{v:,.0f} s",
    "minutes": lambda v: f"{v / 60:.0f} minutes",
    "MB": lambda v: f"{v / 1e6:.1f} MB",
    "KB": lambda v: f"{v / 1e3:,.0f} KB",
    "int": lambda v: f"{v:,.0f}",
    "f2": lambda v: f"{v:.2f}",
    "x": lambda v: f"{v:.1f}×",
    "raw": str,
}
AGGREGATES = ("one", "mean", "min", "max", "range", "spread")


def _field(row, path):
  """`row`'s value at a dotted `path` (a number indexes a list); `a-b` and
  `a/b` combine two paths."""
  for op in ("-", "/"):
    if op in path:
      a, b = (_field(row, p) for p in path.split(op, 1))
      return a - b if op == "-" else a / b
  value = row
  for key in path.split("."):
    value = value[int(key) if isinstance(value, list) else key]
  return value


def _find(row, path):
  """`row`'s value at a dotted `path`, or None where it has none."""
  try:
    return _field(row, path)
  except (KeyError, IndexError, TypeError):
    return None


@functools.lru_cache(maxsize=None)
def _cached(name):
  """`read(name)`, once per process: a page holds many figures of a file."""
  return tuple(read(name))


def value(query):
  """The figure a query asks for, formatted.

  `FILE [KEY=VALUE ...] PATH [AGGREGATE] FORMAT`: the rows of
  results/FILE.jsonl whose field at KEY (dotted) equals VALUE (compared as
  text), the field at PATH in each (dotted, a number indexing a list;
  `a-b`, `a/b` of two fields), then AGGREGATE over the rows (`one`, the
  default: exactly one row must match; `mean`, `min`, `max`; `range`:
  min–max; `spread`: mean (min–max)), in FORMAT (a key of `FORMATS`).
  `FILE [KEY=VALUE ...] count`: how many rows match.
  """
  name, *tokens = query.split()
  filters = dict(t.split("=", 1) for t in tokens if "=" in t)
  rest = [t for t in tokens if "=" not in t]
  rows = [r for r in _cached(name) if all(
      str(_find(r, k)) == v for k, v in filters.items())]
  if rest == ["count"]:
    return f"{len(rows):,}"
  path, fmt = rest[0], rest[-1]
  aggregate = rest[1] if len(rest) == 3 else "one"
  if fmt not in FORMATS or aggregate not in AGGREGATES or len(rest) > 3:
    raise ValueError(f"bad value query: {query!r}")
  values = [_field(r, path) for r in rows]
  if not values or (aggregate == "one" and len(values) != 1):
    raise ValueError(f"{query!r} matches {len(values)} rows")
  f = FORMATS[fmt]
  if aggregate == "range":
    low, high = f(min(values)), f(max(values))
    if low == high:
      return low
    return (f"{low} to {high}" if fmt.startswith("signed") else
            f"{_bare(low)}–{high}")
  if aggregate == "spread":
    low, high = f(min(values)), f(max(values))
    middle = f(statistics.mean(values))
    return middle if low == high else f"{middle} ({_bare(low)}–{_bare(high)})"
  return f({"one": lambda: values[0], "mean": lambda: statistics.mean(values),
            "min": lambda: min(values), "max": lambda: max(values)}[
                aggregate]())


def _bare(figure):
  """A figure without its unit, for the low end of a range."""
  return re.sub(r"[^0-9.,+-]+$", "", figure)


def rendered(text):
  """`text` with every table block and figure rendered afresh."""
  text = BLOCK.sub(lambda m: f"{m.group(1)}{TABLES[m.group(2)]()}\n"
                   f"{m.group(4)}", text)
  return VALUE.sub(lambda m: f"{m.group(1)}{value(m.group(2))}"
                   f"{m.group(4)}", text)


def documents():
  """README.md and the docs/ pages, the files tables may stand in."""
  return [os.path.join(REPO, "README.md")] + sorted(
      glob.glob(os.path.join(REPO, "docs", "*.md")))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true")
  args = parser.parse_args()
  differs = []
  for path in documents():
    with open(path, encoding="utf-8") as f:
      text = f.read()
    new = rendered(text)
    if new == text:
      continue
    differs.append(path)
    if not args.check:
      with open(path, "w", encoding="utf-8") as f:
        f.write(new)
  if args.check and differs:
    print(f"{', '.join(differs)}: a table differs from results/; run "
          "python benchmarks/tables.py", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  main()
