"""The training config of ``train.py``: declared once (nested dataclasses), its generated command
line, its presets and recipes, its JSON form, and the options and work directories it refuses."""

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from automedsam_jax.core.config import ClassPromptConfig, LocaliserConfig, LossConfig
from automedsam_jax.data.pipeline import PipelineConfig
from automedsam_jax.train.config import (RECIPE_PRESETS, RECIPES, TrainConfig, from_args,
                                         from_json, parser, preset, to_json)

ROOT = Path(__file__).parents[1]
SYNTH = "synthetic:num_cases=6,num_classes=3,height=48,width=48"


def _leaves(klass, prefix=""):
    """Every option-bearing field of a nested config class, as dotted paths."""
    for f in dataclasses.fields(klass):
        if f.metadata.get("cmd", True) is False:
            continue
        if dataclasses.is_dataclass(f.default):  # a nested config (its default instance)
            yield from _leaves(type(f.default), prefix + f.name + ".")
        else:
            yield prefix + f.name


def test_every_field_has_exactly_one_option_and_nothing_else_is_one():
    p = parser()
    p.parse_known_args([])  # simple-parsing adds the options when it first parses
    dests = [a.dest for a in p._actions if a.dest.startswith("cfg.")]
    fields = ["cfg." + path for path in _leaves(TrainConfig)]
    assert len(fields) > 50 and sorted(dests) == sorted(fields)
    # The nested configs are the library's own classes (one declaration of each field).
    cfg = TrainConfig()
    assert isinstance(cfg.model.class_prompt, ClassPromptConfig)
    assert isinstance(cfg.model.localiser, LocaliserConfig)
    assert isinstance(cfg.loss, LossConfig) and isinstance(cfg.pipeline, PipelineConfig)


def test_help_lists_each_recipes_real_settings(capsys):
    with pytest.raises(SystemExit) as stop:
        from_args(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name, values in {**RECIPES, **{r: v for (_, r), v in RECIPE_PRESETS.items()}}.items():
        for path, value in values.items():
            assert f"--{path.rsplit('.', 1)[-1].replace('_', '-')} {value}" in text, (name, path)
    # The defaults shown are the demo's under the default recipe (what `python train.py` runs).
    demo = preset("demo", recipe="improved")
    assert "(default: map)" in text and demo.model.prompt == "map"
    assert f"(default: {demo.optim.lr})" in text


def test_paper_recipe_is_the_dataclass_defaults_and_the_papers():
    cfg = from_args(["--recipe", "paper", "--dataset", "brats"])
    assert cfg == dataclasses.replace(
        TrainConfig(), data=dataclasses.replace(TrainConfig().data, dataset="brats"),
        model=dataclasses.replace(TrainConfig().model, backbone="medsam_vit_b", weights=""),
        run=dataclasses.replace(TrainConfig().run, workdir="runs/brats", eval_every=5))
    o = cfg.optim
    assert (o.epochs, o.batch_size, o.lr, o.b1, o.b2, o.eps, o.weight_decay, o.lr_schedule,
            o.plateau_patience, o.plateau_factor) == (100, 16, 1e-4, 0.9, 0.999, 1e-8, 0.01,
                                                      "plateau", 5, 0.9)
    cp = cfg.model.class_prompt
    assert (cp.widths, cp.class_embedding, cfg.model.prompt, cfg.pipeline.flips,
            cfg.pipeline.negatives, cfg.run.presence, cfg.pipeline.augment.variants) == (
        (64, 128, 256), "scalar", "class", True, False, False, 0)
    assert cfg.loss == LossConfig(("mse", "ce", "dice", "sd"), "uncertainty")


def test_improved_recipe_changes_only_its_fields():
    paper = to_json(from_args(["--recipe", "paper", "--dataset", "brats"]))
    improved = to_json(from_args(["--dataset", "brats"]))

    def flat(d, prefix=""):
        for k, v in d.items():
            yield from flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]
    a, b = dict(flat(json.loads(paper))), dict(flat(json.loads(improved)))
    assert {k for k in a if a[k] != b[k]} == {"recipe", *RECIPES["improved"]}


def test_demo_preset_per_backend():
    gpu, cpu = preset("demo", "gpu"), preset("demo", "cpu")
    assert (gpu.optim.epochs, gpu.optim.batch_size, gpu.optim.lr,
            gpu.model.class_prompt.widths, gpu.pipeline.flips) == (100, 16, 1e-4,
                                                                   (64, 128, 256), True)
    assert cpu.model.class_prompt.widths == (32, 64, 128) and not cpu.pipeline.flips
    assert cpu.data.dataset == gpu.data.dataset == "demo" and cpu.model.weights == "pretrained"
    assert cpu.cache.cache_embeddings and gpu.cache.cache_embeddings


def test_nested_options_and_switches():
    cfg = from_args(["--dataset", "synthetic:num_cases=4", "--epochs", "3", "--lr", "0.5",
                     "--widths", "8", "16", "32", "--noflips", "--nodiffusion",
                     "--branches", "dense", "--terms", "ce", "dice", "--noprogress",
                     "--variants", "2", "--head", "conv", "--width", "0",
                     "--classes-per-step", "all"])
    assert cfg.run.workdir == "runs/synthetic"  # a dataset's own workdir, not the demo's
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.model.class_prompt.widths) == (3, 0.5,
                                                                               (8, 16, 32))
    assert not cfg.pipeline.flips and not cfg.model.class_prompt.diffusion
    assert not cfg.run.progress and cfg.model.class_prompt.branches == "dense"
    assert cfg.loss.terms == ("ce", "dice") and cfg.pipeline.augment.variants == 2
    assert cfg.model.localiser.width == 0 and cfg.pipeline.classes_per_step == "all"


def test_config_json_round_trip(tmp_path):
    cfg = from_args(["--dataset", SYNTH, "--widths", "8", "16", "32", "--terms", "mse", "sd",
                     "--scale", "0.8", "1.1", "--manual-dir", str(tmp_path)])
    text = to_json(cfg)
    assert json.loads(text)["model"]["class_prompt"]["widths"] == [8, 16, 32]
    back = from_json(text)
    assert back == cfg and back.loss.terms == ("mse", "sd")
    assert back.pipeline.augment.scale == (0.8, 1.1)


# -- bad options: one line, exit 2, nothing written -------------------------------------------
def _train_main():
    spec = importlib.util.spec_from_file_location("train_script", ROOT / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


BAD_OPTIONS = [
    (["--batch-size", "0"], "--batch-size must be > 0, got 0"),
    (["--epochs", "-3"], "--epochs must be > 0, got -3"),
    (["--lr", "-1"], "--lr must be > 0, got -1.0"),
    (["--lr", "0"], "--lr must be > 0"),
    (["--max-steps", "-1"], "--max-steps must be >= 0"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
    (["--eps", "0"], "--eps > 0"),
    (["--b2", "1"], "--b2 must be in [0, 1)"),
    (["--backbone", "vit_q"], "--backbone 'vit_q' is not a SAM-family preset"),
    (["--weights", "{tmp}/nowhere"], "nowhere: not a converted model directory"),
    (["--weights", "pretrained"], "--weights pretrained is LiteMedSAM only"),
    (["--weights", "{tmp}"], "no config.json"),
    (["--negative-fraction", "1.5"], "--negative-fraction must be in [0, 1]"),
    (["--prompt", "box"], "invalid choice: 'box'"),
    (["--terms", "mse", "bce"], "'bce'"),
    (["--widths", "8", "16"], "--widths"),
    (["--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["--recipe", "fast"], "invalid choice: 'fast'"),
    (["--classes", "liver=1"], "add --files DIR"),
    (["--dataset", "mine", "--files", "{tmp}", "--classes", ""], "--files needs --classes"),
    (["--dataset", "mine", "--files", "{tmp}/nowhere", "--classes", "liver=1"], "nowhere"),
]


@pytest.mark.parametrize("argv,message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_option_is_one_line_exit_2_nothing_written(argv, message, tmp_path, capsys,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    work, data = tmp_path / "run", tmp_path / "data"
    before = sorted(tmp_path.iterdir())
    code = _train_main()(["--dataset", SYNTH, "--backbone", "tiny_vit_b", "--weights",
                          "random", "--workdir", str(work), "--data-dir", str(data), *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert message in err and "Traceback" not in err
    assert sorted(tmp_path.iterdir()) == before  # no work directory, no dataset


def test_batch_that_does_not_divide_over_the_devices(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dataset", SYNTH,
                        "--backbone", "tiny_vit_b", "--weights", "random", "--batch-size", "3",
                        "--workdir", str(tmp_path / "run"), "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: --batch-size 3 must be a multiple of the device count 2"]
    assert not (tmp_path / "run").exists() and not (tmp_path / "d").exists()


def test_run_refused_after_taking_the_workdir_leaves_no_workdir(tmp_path, capsys):
    """A check that needs the data (fewer training slices than a batch) comes after the work
    directory is locked: the refused run removes what it made, so nothing is left there."""
    work = tmp_path / "runs" / "run"
    code = _train_main()(["--dataset", SYNTH, "--backbone", "tiny_vit_b", "--weights", "random",
                          "--batch-size", "64", "--workdir", str(work), "--data-dir",
                          str(tmp_path / "data"), "--noprogress"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: "), err
    assert "training slices < batch size 64" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


# -- one train.py per work directory ------------------------------------------------------------
def _cmd(work, data, *extra):
    return [sys.executable, str(ROOT / "train.py"), "--recipe", "paper", "--dataset", SYNTH,
            "--backbone", "tiny_vit_b", "--weights", "random", "--widths", "8", "16", "32",
            "--epochs", "2", "--batch-size", "2", "--workdir", str(work), "--data-dir",
            str(data), "--noprogress", *extra]


def _written_config(work):
    try:
        return from_json((work / "train_config.json").read_text())
    except ValueError:  # being written
        return None


def test_second_run_on_a_busy_workdir_stops_and_a_killed_runs_lock_does_not_block(tmp_path):
    work, data = tmp_path / "run", tmp_path / "data"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    first = subprocess.Popen(_cmd(work, data), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.time() + 120
        # train_config.json is written once the data and the model are ready (lock held)
        while not (work / "train_config.json").exists() or not _written_config(work):
            assert first.poll() is None and time.time() < deadline, first.stderr.read()
            time.sleep(0.2)
        listing = sorted(p.relative_to(work) for p in work.rglob("*"))
        config = (work / "train_config.json").read_text()
        second = subprocess.run(_cmd(work, data, "--lr", "5e-4"), capture_output=True,
                                text=True, env=env, cwd=tmp_path, timeout=300)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"error: {work} is in use by another train.py (pid {first.pid}); wait for it to "
            "finish, or pass another --workdir"]
        # The second run wrote nothing: the first run's config is its own.
        assert (work / "train_config.json").read_text() == config
        assert from_json(config).optim.lr == 1e-4
        assert set(listing) <= {p.relative_to(work) for p in work.rglob("*")}
    finally:
        first.kill()  # SIGKILL: no clean-up, the lock file stays behind
        first.wait()
    assert (work / ".lock").exists()
    third = subprocess.run(_cmd(work, data), capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=600)
    assert third.returncode == 0, third.stderr[-3000:]
    assert (work / "final" / "config.json").exists()


def test_throughput_leaves_out_the_compiling_step_and_reports_per_device_and_in_total():
    from automedsam_jax.train.loop import Throughput
    rate = Throughput(batch_size=8, devices=4)
    assert rate.add(30.0) == 0.0  # the first step compiles: not counted
    assert rate.epoch() == "img/s: only the compiling step so far"
    assert rate.add(0.5) == 16.0 and rate.add(1.5) == pytest.approx(8 / 1.5)
    assert rate.epoch() == "8.00 img/s (2.00 per device, 4 device(s))"  # 16 images in 2 s
