"""``evaluate.py`` on real files: a tfds dataset built on disk (3D synthetic volumes), an
AutoMedSAM checkpoint made by actually training a tiny config, and a tiny box-prompted SAM.

Expectations are computed independently of the batched evaluator: slice by slice, one class at a
time (batch 1), with the image frames of ``frames_reference`` (NumPy, not
``automedsam_jax.core.preprocess``), or with ``SamPredictor`` (box prompts, via ``boxdemo``), the
volumes stacked here, and scored with :mod:`automedsam_jax.core.metrics` (checked against
surface-distance in ``test_metrics``).

The NumPy frames and the evaluator's agree up to float32 rounding, so a voxel whose logits are
within ``frames_reference.REL_TOL`` of a tie may take either label (a few voxels per volume):
a reported score must then be the score of one of the predictions the reference allows, the
certain voxels plus any subset of those open ones, to 1e-9.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from automedsam_jax.boxdemo import segment_volume
from automedsam_jax.core.config import TINY_CLASS_PROMPT, AutoMedSamConfig, SamConfig
from automedsam_jax.core.init import random_model
from automedsam_jax.core.metrics import ClassMetrics, aggregate, dice, nsd
from automedsam_jax.core.modeling import Sam
from automedsam_jax.data import SyntheticConfig, prepare
from automedsam_jax.core.routes.box import gt_box
from automedsam_jax.evaluation import paper_table
from automedsam_jax.evaluation.cli import main
from automedsam_jax.evaluation.evaluator import CaseResult, Evaluation
from automedsam_jax.evaluation.volumes import VolumeAssembler
from automedsam_jax.io.checkpoint import load_model, save_model
from automedsam_jax.inference import SamPredictor
from automedsam_jax.train.config import TrainConfig, override
from automedsam_jax.train.loop import run
from automedsam_references.frames_reference import (area_bounds, candidate_masks, class_logits,
                                                   possible_labels, robust_threshold, tolerance)

SYNTHETIC = SyntheticConfig(num_cases=5, num_classes=3, height=48, width=48, depth=6)
SPEC = "synthetic:num_cases=5,num_classes=3,height=48,width=48,depth=6"
NAMES = [f"structure_{k}" for k in (1, 2, 3)]
CLASSES = (1, 2, 3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny AutoMedSAM trained for 2 epochs (14 steps) on 3D synthetic volumes."""
    root = tmp_path_factory.mktemp("evaluate")
    run(override(TrainConfig(), {
        "data.dataset": SPEC, "data.data_dir": str(root / "data"), "model.backbone": "tiny_vit_b",
        "model.weights": "random", "run.workdir": str(root / "run"), "optim.epochs": 2,
        "optim.batch_size": 2, "model.class_prompt.widths": (8, 16, 32), "run.progress": False}))
    return root


@pytest.fixture(scope="module")
def tiny_sam(tmp_path_factory):
    """A random tiny box-prompted SAM model directory (the parts of a random AutoMedSAM)."""
    cfg = AutoMedSamConfig(SamConfig.preset("tiny_vit_b"), TINY_CLASS_PROMPT)
    donor = random_model(cfg, seed=3)
    sam = nnx.eval_shape(lambda: Sam(cfg.sam, rngs=nnx.Rngs(0)))
    for part in ("image_encoder", "prompt_encoder", "mask_decoder"):
        nnx.update(getattr(sam, part), nnx.state(getattr(donor, part)))
    return save_model(sam, tmp_path_factory.mktemp("sam") / "tiny_sam")


def _test_cases(data_dir):
    """{case: (image (D, H, W), gt (D, H, W), spacing)} of the test split, read raw."""
    src = prepare(SYNTHETIC, data_dir).as_data_source("test")
    slices = {}
    for i in range(len(src)):
        r = src[i]
        slices.setdefault(r["case_id"].decode(), []).append(r)
    out = {}
    for case, recs in slices.items():
        recs.sort(key=lambda r: r["slice_index"])
        assert len(recs) == recs[0]["depth"] == SYNTHETIC.depth
        out[case] = (np.stack([r["image"][..., 0] for r in recs]),
                     np.stack([r["label"] for r in recs]), tuple(recs[0]["spacing"]))
    return out


def _exact(labels):
    """A label volume taken as it is: ``(labels, options)`` with one possible label per voxel."""
    return labels, np.stack([labels == c for c in (0, *CLASSES)], axis=1)


def _check_against(metrics_json, expected, cases):
    """Every case/class score of metrics.json is the DSC/NSD of a prediction the expected label
    maps allow (see the module docstring)."""
    by_case = {c["case_id"]: c for c in metrics_json["per_case"]}
    assert set(by_case) == set(cases)
    predicted_any = False
    for case, (_, gt, spacing) in cases.items():
        labels, options = expected[case]
        decided = options.sum(axis=1) == 1
        got = by_case[case]
        assert got["slices"] == gt.shape[0] and got["complete"] and got["spacing"] == list(spacing)
        for i, (c, name) in enumerate(zip(CLASSES, NAMES)):
            g, possible = gt == c, options[:, i + 1]
            certain = possible & decided
            predicted_any |= certain.any()
            if not (g.any() or possible.any()):
                assert name not in got["classes"]
                continue
            assert g.any() or certain.any(), f"{case} {name}: scored or not is a rounding question"
            dsc, score = got["classes"][name]["dsc"], got["classes"][name]["nsd"]
            assert any(abs(dice(g, p) - dsc) <= 1e-9 and abs(nsd(g, p, spacing) - score) <= 1e-9
                       for p in candidate_masks(labels == c, certain, possible & ~decided)), \
                (case, name, dsc, score)
    assert predicted_any, "the model predicts nothing: the comparison would prove little"


def _expected_predictions(model, cases, min_area=0.0):
    """Slice by slice, one class at a time (batch 1), with the NumPy frames: per case the label
    maps ``(D, H, W)`` the evaluator should give, with classes whose mask covers less than
    ``min_area`` of the image dropped, and ``(D, K + 1, H, W)`` the labels a float32 route can
    give at each voxel (``frames_reference.possible_labels``); and each slice's ``(2, K)``
    bounds on its K mask areas (``area_bounds``). No area may straddle ``min_area``: the
    presence decisions are then the same on both routes."""
    frame = model.config.sam.frame
    forward = jax.jit(lambda m, x, c: m(x, c).low_res_logits)  # one image, one class
    preds, bounds = {}, []
    for case, (image, _, _) in cases.items():
        labels, options = [], []
        for im in image:
            logits = class_logits(lambda x, c: forward(model, jnp.asarray(x)[None],
                                                        jnp.array([c]))[0], im, CLASSES, frame)
            eps = tolerance(logits)
            lo, hi = area_bounds(logits, eps)
            assert not np.any((lo < min_area) & (min_area <= hi)), (case, lo, hi, min_area)
            bounds.append((lo, hi))
            label, option = possible_labels(logits, CLASSES, eps, keep=lo >= min_area)
            labels.append(label)
            options.append(option)
        preds[case] = np.stack(labels), np.stack(options)
    return preds, np.asarray(bounds)


@pytest.mark.slow
def test_evaluate_trained_checkpoint(trained, tmp_path):
    out = tmp_path / "eval"
    # Dataset and data dir come from the checkpoint's train_config; 6 slices in batches of 4
    # exercise the padded last batch.
    assert main(["--checkpoint", str(trained / "run"), "--out", str(out), "--batch-size", "4"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["run"]["checkpoint"] == str(trained / "run" / "best")
    assert result["nsd_units"] == "mm" and result["class_names"] == {"1": NAMES[0], "2": NAMES[1],
                                                                      "3": NAMES[2]}
    model = load_model(trained / "run" / "best")
    cases = _test_cases(trained / "data")
    preds, _ = _expected_predictions(model, cases)
    _check_against(result, preds, cases)

    # Per class and dataset means follow from the per-case scores.
    per_case = [{NAMES.index(n) + 1: ClassMetrics(m["dsc"], m["nsd"])
                 for n, m in c["classes"].items()} for c in result["per_case"]]
    summary = aggregate(per_case)
    mean = result["per_dataset"][SYNTHETIC.name]
    assert mean["dsc"] == pytest.approx(summary.dsc) and mean["nsd"] == pytest.approx(summary.nsd)
    assert mean["slices"] == 6 and mean["cases"] == 1
    for c, s in summary.per_class.items():
        assert result["per_class"][NAMES[c - 1]]["dsc"] == pytest.approx(s.dsc)

    # The CSV holds the same rows; the Markdown table the same numbers in %.
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == sum(len(c["classes"]) for c in result["per_case"])
    for row in rows:
        case = next(c for c in result["per_case"] if c["case_id"] == row["case_id"])
        expected = case["classes"][row["class_name"]]["dsc"]
        assert float(row["dsc"]) == pytest.approx(expected, abs=1e-6)
    table = (out / "table.md").read_text()
    header, _, dsc_row, nsd_row = table.strip().splitlines()[-6:-2]
    assert header == "| | " + " | ".join(NAMES) + " | mean |"
    assert dsc_row.split(" | ")[-1] == f"{100 * mean['dsc']:.3f} |"
    assert nsd_row.startswith("| NSD (%) |")
    assert table.strip().splitlines()[-1].startswith("Presence over 18 (slice, class) pairs")


@pytest.mark.slow
def test_evaluate_applies_the_stored_presence_rule(trained, tmp_path):
    """A model whose config.json carries a presence rule: classes whose mask covers less than
    ``min_area`` of a slice are dropped there, and the presence counts are those of the
    (slice, class) pairs of the expected label maps."""
    import shutil
    from automedsam_jax.io.checkpoint import update_meta
    from automedsam_jax.io.rundir import load_automedsam

    model_dir = shutil.copytree(trained / "run" / "best", tmp_path / "model")
    cases = _test_cases(trained / "data")
    model = load_model(model_dir)
    _, bounds = _expected_predictions(model, cases)
    lo, hi = bounds[:, 0], bounds[:, 1]
    np.testing.assert_array_equal(lo > 0, hi > 0)  # which masks are empty is not in doubt
    masks = int((lo > 0).sum())  # (slice, class) pairs with a non-empty mask
    # About half the predicted (slice, class) masks are dropped: a threshold near the median area
    # that no area's rounding straddles.
    min_area = robust_threshold(lo, hi, float(np.median(hi[hi > 0])))
    update_meta(model_dir, {"presence": {"min_area": min_area}})
    assert load_automedsam(model_dir).min_area == min_area
    preds, _ = _expected_predictions(model, cases, min_area)
    out = tmp_path / "eval"
    assert main(["--checkpoint", str(model_dir), "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    _check_against(result, preds, cases)
    tp = fp = fn = tn = 0
    for case, (_, gt, _) in cases.items():
        labels, options = preds[case]
        decided = options.sum(axis=1) == 1
        for z in range(gt.shape[0]):
            for i, c in enumerate(CLASSES):
                g, p = (gt[z] == c).any(), (labels[z] == c).any()
                # present or not, whatever the open voxels take
                assert p == (options[z, i + 1] & decided[z]).any() == options[z, i + 1].any()
                tp, fp, fn, tn = tp + (g and p), fp + (p and not g), fn + (g and not p), \
                    tn + (not g and not p)
    got = result["presence"]
    assert (got["tp"], got["fp"], got["fn"], got["tn"], got["min_area"]) == (tp, fp, fn, tn,
                                                                             min_area)
    assert fp + tp < masks  # the rule dropped masks
    assert main(["--checkpoint", str(model_dir), "--out", str(tmp_path / "off"),
                 "--no-presence"]) == 0
    off = json.loads((tmp_path / "off" / "metrics.json").read_text())["presence"]
    assert off["min_area"] == 0 and off["tp"] + off["fp"] == masks


@pytest.mark.slow
@pytest.mark.parametrize("offset", [0, 7, "image"])
def test_box_baseline_matches_predictor(trained, tiny_sam, tmp_path, offset):
    """--prompt box scores what SamPredictor gives for the same (enlarged, clipped) GT boxes."""
    out = tmp_path / "box"
    assert main(["--prompt", "box", "--box-offset", str(offset), "--checkpoint", str(tiny_sam),
                 "--dataset", SPEC, "--data-dir", str(trained / "data"), "--out", str(out),
                 "--batch-size", "4"]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["run"]["box_offset"] == offset and result["run"]["method"] == "box"
    predictor = SamPredictor.from_checkpoint(tiny_sam)
    cases = _test_cases(trained / "data")
    preds = {}
    for case, (image, gt, _) in cases.items():
        if offset == 0:  # boxdemo's tight-GT-box segmentation, written independently
            preds[case] = segment_volume(predictor, image, gt)
            continue
        preds[case] = np.zeros_like(gt)
        for z in range(len(gt)):
            classes = [c for c in range(1, 4) if (gt[z] == c).any()]
            if not classes:
                continue
            h, w = gt[z].shape
            if offset == "image":  # one whole-image mask; it goes to the lowest class present
                classes = classes[:1]
            boxes = []
            for c in classes:
                ys, xs = np.nonzero(gt[z] == c)
                boxes.append([0, 0, w, h] if offset == "image" else
                             [max(xs.min() - offset, 0), max(ys.min() - offset, 0),
                              min(xs.max() + offset, w), min(ys.max() + offset, h)])
            predictor.set_image(image[z])
            logits = predictor.predict(boxes=np.array(boxes, np.float32), return_logits=True)[0]
            best, fg = logits[:, 0].argmax(0), logits[:, 0].max(0) > 0
            preds[case][z][fg] = np.asarray(classes)[best[fg]]
    _check_against(result, {case: _exact(p) for case, p in preds.items()}, cases)


def test_gt_box_offsets_are_clipped():
    mask = np.zeros((20, 30), bool)
    mask[2:6, 25:28] = True  # rows 2..5, columns 25..27
    np.testing.assert_array_equal(gt_box(mask, 0), [25, 2, 27, 5])
    np.testing.assert_array_equal(gt_box(mask, 4), [21, 0, 30, 9])
    np.testing.assert_array_equal(gt_box(mask, "image"), [0, 0, 30, 20])


def test_volume_assembler_any_order_and_incomplete_cases():
    asm = VolumeAssembler()
    rec = lambda case, z, depth: {"case_id": case, "slice_index": z, "depth": depth,  # noqa: E731
                                  "spacing": np.array([3, 1, 1], np.float32),
                                  "label": np.full((2, 2), z, np.uint8)}
    assert asm.add(rec("a", 2, 3), np.full((2, 2), 20)) is None
    assert asm.add(rec("b", 0, 1), np.zeros((2, 2))).gt.shape == (2, 2)  # 2D: no depth axis
    assert asm.add(rec("a", 0, 3), np.full((2, 2), 0)) is None
    assert asm.add(rec("c", 4, 9), np.full((2, 2), 4)) is None
    case = asm.add(rec("a", 1, 3), np.full((2, 2), 10))
    assert case.case_id == "a" and case.spacing == (3.0, 1.0, 1.0) and case.complete
    np.testing.assert_array_equal(case.gt[:, 0, 0], [0, 1, 2])
    np.testing.assert_array_equal(case.pred[:, 0, 0], [0, 10, 20])
    (rest,) = asm.finish()
    assert rest.case_id == "c" and not rest.complete and rest.num_slices == 1


def test_paper_table_marks_classes_never_seen():
    cases = (CaseResult("x", 1, None, True, {1: ClassMetrics(0.5, 0.25)}),
             CaseResult("y", 1, None, True, {1: ClassMetrics(1.0, 0.75), 3: ClassMetrics(0, 0)}))
    ev = Evaluation(("a", "b", "c"), cases, aggregate(c.scores for c in cases), 2.0, False, 2, 1.0)
    lines = paper_table(ev, "T").splitlines()
    assert lines[2] == "| | a | b | c | mean |"
    assert lines[4] == "| DSC (%) | 75.000 | – | 0.000 | 37.500 |"
    assert lines[5] == "| NSD (%) | 50.000 | – | 0.000 | 25.000 |"


def test_errors_name_the_problem(trained, tiny_sam, tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["--checkpoint", str(missing)]) == 2
    assert f"checkpoint {missing} does not exist" in capsys.readouterr().err
    assert main(["--checkpoint", str(tiny_sam), "--data-dir", str(trained / "data")]) == 2
    assert "not an AutoMedSAM" in capsys.readouterr().err
    assert main(["--prompt", "box", "--checkpoint", str(trained / "run")]) == 2
    assert "box prompts need a converted" in capsys.readouterr().err
    other = "synthetic:num_cases=3,num_classes=2,height=32,width=32"
    assert main(["--checkpoint", str(trained / "run"), "--dataset", other,
                 "--data-dir", str(tmp_path / "d2")]) == 2
    assert "trained on classes ['structure_1', 'structure_2', 'structure_3']" in \
        capsys.readouterr().err
    for bad, message in ((["--box-offset", "-1", "--prompt", "box"], "got '-1'"),
                         (["--box-offset", "3"], "--box-offset needs --prompt box"),
                         (["--batch-size", "0"], "--batch-size must be >= 1")):
        assert main(bad) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_case_blocks_are_the_cases_of_the_split(trained):
    """Whole cases, in stored order, for a split holding every slice (one record read per case)
    and for the train split (foreground slices only: the fallback), against grouping every
    record by its case id."""
    from automedsam_jax.evaluation.hosts import case_blocks

    for split in ("train", "validation", "test"):
        src = prepare(SYNTHETIC, trained / "data").as_data_source(split)
        expected: dict[str, list[int]] = {}
        for i in range(len(src)):
            expected.setdefault(src[i]["case_id"].decode(), []).append(i)
        blocks = case_blocks(src)
        assert [(case, list(rows)) for case, rows in blocks] == list(expected.items()), split


@pytest.mark.slow
def test_two_processes_give_the_scores_of_one(trained, tmp_path):
    """``evaluate.py`` on two processes (jax.distributed over gloo, one CPU device each): each
    scores its share of the cases and process 0 writes the gathered result — the same per-case,
    per-class, dataset and presence figures as one process evaluating everything."""
    root = Path(__file__).resolve().parents[1]
    args = ["--checkpoint", str(trained / "run"), "--split", "train", "--batch-size", "2"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen(
        [sys.executable, str(root / "evaluate.py"), *args, "--out", str(tmp_path / "two")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                 JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i), PYTHONPATH=str(root)))
        for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-3000:]
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert len(one["per_case"]) >= 2
    assert f"{len(one['per_case'])} cases split over 2 processes" in outs[0]
    assert "wrote" not in outs[1]  # only process 0 reports
    for key in ("per_case", "per_class", "per_dataset", "presence", "class_names"):
        assert two[key] == one[key], key
