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
from automedsam_jax.io.cli import ArgumentParser
from automedsam_jax.train.config import (NAMED, TrainConfig, compose, from_args, from_json,
                                         parser, to_json)

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


def test_help_lists_every_named_configuration_and_what_it_sets(capsys):
    with pytest.raises(SystemExit) as stop:
        from_args(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for name in ("demo", "brats", "paper", "improved", "cpu", "accelerator", "demo+cpu",
                 "demo+improved"):
        assert f" {name}: " in text, name
    assert "demo+cpu: --epochs 60, --batch-size 2, --lr 0.0005, --lr-schedule cosine, " \
           "--class-prompt-widths 32 64 128, --no-flips" in text
    assert "improved: --prompt map, --class-embedding learned, --negatives, --no-flips" in text
    # The defaults shown are the demo's under the default recipe (what `python train.py` runs).
    demo = compose("demo", "improved", "cpu")
    assert "(default: map)" in text and demo.model.prompt == "map"
    assert f"(default: {demo.optim.lr})" in text


def test_paper_recipe_is_the_dataclass_defaults_and_the_papers():
    cfg = from_args(["--recipe", "paper", "--dataset", "brats"])
    assert cfg == dataclasses.replace(
        TrainConfig(), recipe="paper", composed=("brats", "paper"),
        data=dataclasses.replace(TrainConfig().data, dataset="brats"),
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


def _flat(d, prefix=""):
    for k, v in d.items():
        yield from _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]


def test_improved_recipe_changes_only_its_fields():
    a = dict(_flat(json.loads(to_json(from_args(["--recipe", "paper", "--dataset", "brats"])))))
    b = dict(_flat(json.loads(to_json(from_args(["--dataset", "brats"])))))
    assert {k for k in a if a[k] != b[k]} == {"recipe", "composed", *NAMED["improved"]}


def test_one_recipe_default():
    assert TrainConfig().recipe == "improved" and from_args([]).recipe == "improved"


# The configs `python train.py` gave before the table (hand-written from the previous release's
# presets, not read off NAMED): the demo on a CPU and on an accelerator, each recipe.
_OLD_DEMO = {
    ("cpu", "improved"): {"optim.epochs": 100, "optim.batch_size": 8, "optim.lr": 1e-3,
                          "optim.lr_schedule": "cosine", "model.class_prompt.widths": [32, 64, 128],
                          "pipeline.flips": False, "model.prompt": "map", "run.eval_every": 20,
                          "model.input_spacing": 1.5, "cache.cache_embeddings": True},
    ("accelerator", "improved"): {"optim.epochs": 100, "optim.batch_size": 8, "optim.lr": 1e-3,
                                  "optim.lr_schedule": "cosine",
                                  "model.class_prompt.widths": [64, 128, 256],
                                  "pipeline.flips": False, "model.prompt": "map",
                                  "run.eval_every": 20, "model.input_spacing": 1.5,
                                  "cache.cache_embeddings": True},
    ("cpu", "paper"): {"optim.epochs": 60, "optim.batch_size": 2, "optim.lr": 5e-4,
                       "optim.lr_schedule": "cosine", "model.class_prompt.widths": [32, 64, 128],
                       "pipeline.flips": False, "model.prompt": "class", "run.eval_every": 0,
                       "model.input_spacing": 0.0, "cache.cache_embeddings": True},
    ("accelerator", "paper"): {"optim.epochs": 100, "optim.batch_size": 16, "optim.lr": 1e-4,
                               "optim.lr_schedule": "plateau",
                               "model.class_prompt.widths": [64, 128, 256],
                               "pipeline.flips": True, "model.prompt": "class",
                               "run.eval_every": 0, "model.input_spacing": 0.0,
                               "cache.cache_embeddings": True},
}


@pytest.mark.parametrize("profile,recipe", sorted(_OLD_DEMO))
def test_demo_per_profile_is_the_previous_releases_config(profile, recipe, monkeypatch):
    import jax
    backend = "cpu" if profile == "cpu" else "gpu"
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    for argv in (["--recipe", recipe], ["--recipe", recipe, "--profile", profile]):
        cfg = from_args(argv)
        flat = dict(_flat(json.loads(to_json(cfg))))
        assert {k: flat[k] for k in _OLD_DEMO[profile, recipe]} == _OLD_DEMO[profile, recipe]
        assert cfg.profile == profile and cfg.data.dataset == "demo"
        assert cfg.model.weights == "pretrained" and cfg.run.workdir == "runs/demo"


def test_composition_order_and_the_names_recorded():
    cfg = compose("demo", "improved", "cpu")
    assert cfg.composed == ("demo", "improved", "cpu", "demo+cpu", "demo+improved")
    # demo+improved comes after demo+cpu: its run length wins, demo+cpu's widths stay.
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.model.class_prompt.widths) == (100, 1e-3,
                                                                              (32, 64, 128))
    assert compose("demo", "paper", "accelerator").composed == ("demo", "paper", "accelerator")
    # A dataset with options is its preset's name; a dataset no name matches: its own workdir;
    # profile auto is left unresolved where no combination depends on it (JAX not initialised).
    brats = compose("brats:classes=subregions", "paper")
    assert brats.composed == ("brats", "paper") and brats.profile == "auto"
    assert brats.run.workdir == "runs/brats" and brats.data.dataset == "brats:classes=subregions"
    other = compose("synthetic:num_cases=4", "improved", "cpu")
    assert other.composed == ("improved", "cpu") and other.run.workdir == "runs/synthetic"
    # The options given come last.
    cfg = from_args(["--profile", "cpu", "--lr", "0.25", "--class-prompt-widths", "8", "16", "32"])
    assert (cfg.optim.lr, cfg.model.class_prompt.widths, cfg.optim.epochs) == (0.25, (8, 16, 32),
                                                                               100)
    assert cfg.composed == ("demo", "improved", "cpu", "demo+cpu", "demo+improved")


def test_composed_names_are_written_and_old_configs_without_them_load(tmp_path):
    cfg = from_args(["--profile", "accelerator", "--recipe", "paper"])
    written = json.loads(to_json(cfg))
    assert written["composed"] == ["demo", "paper", "accelerator"]
    assert written["profile"] == "accelerator" and from_json(to_json(cfg)) == cfg
    del written["composed"], written["profile"]  # a train_config.json of the previous release
    old = from_json(json.dumps(written))
    assert old.composed == () and old.profile == "auto" and old.optim == cfg.optim


def test_composed_is_not_an_option():
    with pytest.raises(Exception, match="unrecognized arguments: --composed"):
        from_args(["--composed", "demo"])


def test_nested_options_and_switches():
    cfg = from_args(["--dataset", "synthetic:num_cases=4", "--epochs", "3", "--lr", "0.5",
                     "--class-prompt-widths", "8", "16", "32", "--no-flips", "--no-diffusion",
                     "--branches", "dense", "--terms", "ce", "dice", "--no-progress",
                     "--variants", "2", "--head", "conv", "--localiser-width", "0",
                     "--classes-per-step", "all"])
    assert cfg.run.workdir == "runs/synthetic"  # a dataset's own workdir, not the demo's
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.model.class_prompt.widths) == (3, 0.5,
                                                                               (8, 16, 32))
    assert not cfg.pipeline.flips and not cfg.model.class_prompt.diffusion
    assert not cfg.run.progress and cfg.model.class_prompt.branches == "dense"
    assert cfg.loss.terms == ("ce", "dice") and cfg.pipeline.augment.variants == 2
    assert cfg.model.localiser.width == 0 and cfg.pipeline.classes_per_step == "all"


OLD_SPELLINGS = [
    (["--noflips"], "--no-flips", lambda c: not c.pipeline.flips),
    (["--nonormalise"], "--no-normalise", lambda c: not c.model.localiser.normalise),
    (["--width", "3"], "--localiser-width", lambda c: c.model.localiser.width == 3),
    (["--widths", "8", "16", "32"], "--class-prompt-widths",
     lambda c: c.model.class_prompt.widths == (8, 16, 32)),
    (["--class-prompt-widths", "8,16,32"], "--class-prompt-widths 8 16 32",
     lambda c: c.model.class_prompt.widths == (8, 16, 32)),
    (["--class-prompt-widths=8,16,32"], "--class-prompt-widths 8 16 32",
     lambda c: c.model.class_prompt.widths == (8, 16, 32)),
    (["--widths", "8,16,32"], "--class-prompt-widths 8 16 32",
     lambda c: c.model.class_prompt.widths == (8, 16, 32)),
]


@pytest.mark.parametrize("argv,new,check", OLD_SPELLINGS,
                         ids=[" ".join(a) for a, _, _ in OLD_SPELLINGS])
def test_old_spellings_work_and_warn_with_the_new_one(argv, new, check):
    with pytest.warns(FutureWarning, match=new):
        cfg = from_args(["--dataset", "synthetic:num_cases=4", *argv])
    assert check(cfg)


def test_new_spellings_do_not_warn_and_no_progress_is_canonical(recwarn):
    cfg = from_args(["--no-progress", "--normalise", "--class-prompt-widths", "8", "16", "32",
                     "--localiser-width", "3"])
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]
    assert not cfg.run.progress and cfg.model.localiser.normalise
    assert cfg.model.localiser.width == 3


def test_every_app_respells_and_help_shows_the_new_spellings():
    p = ArgumentParser("app")
    p.add_argument("--no-overlays", action="store_true")
    with pytest.warns(FutureWarning, match="use --no-overlays"):
        assert p.parse_args(["--nooverlays"]).no_overlays
    p = parser()
    p.parse_known_args([])
    options = {o for a in p._actions for o in a.option_strings}
    assert {"--no-progress", "--class-prompt-widths", "--localiser-width", "--profile"} <= options
    assert not options & {"--noprogress", "--widths", "--width", "--composed"}


def test_config_json_round_trip(tmp_path):
    cfg = from_args(["--dataset", SYNTH, "--class-prompt-widths", "8", "16", "32", "--terms",
                     "mse", "sd", "--scale", "0.8", "1.1", "--manual-dir", str(tmp_path)])
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
    (["--class-prompt-widths", "8", "16"], "--class-prompt-widths"),
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
                          str(tmp_path / "data"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().splitlines()[-1].startswith("error: "), err
    assert "training slices < batch size 64" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


# -- one train.py per work directory ------------------------------------------------------------
def _cmd(work, data, *extra):
    return [sys.executable, str(ROOT / "train.py"), "--recipe", "paper", "--dataset", SYNTH,
            "--backbone", "tiny_vit_b", "--weights", "random", "--class-prompt-widths", "8", "16",
            "32", "--epochs", "2", "--batch-size", "2", "--workdir", str(work), "--data-dir",
            str(data), "--no-progress", *extra]


def _written_config(work):
    try:
        return from_json((work / "train_config.json").read_text())
    except ValueError:  # being written
        return None


@pytest.mark.slow
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
    assert rate.add(30.0) == (0.0, None)  # the first step compiles: not counted
    assert rate.epoch() == "img/s: only the compiling step so far"
    assert rate.add(0.5)[0] == 16.0 and rate.add(1.5)[0] == pytest.approx(8 / 1.5)
    assert rate.epoch() == "8.00 img/s (2.00 per device, 4 device(s))"  # 16 images in 2 s
