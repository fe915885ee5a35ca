"""The command line and presets of ``train.py`` (SPEC §3's recipe as the default)."""

import pytest

from automedsam_jax.train.config import from_args, preset


def test_paper_recipe_is_the_papers():
    cfg = from_args(["--recipe", "paper", "--dataset", "brats"])
    assert (cfg.class_embedding, cfg.classes_per_step, cfg.negatives, cfg.augment,
            cfg.presence, cfg.flips) == ("scalar", "one", False, 0, False, True)
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.b1, cfg.b2, cfg.eps, cfg.weight_decay) == (
        100, 16, 1e-4, 0.9, 0.999, 1e-8, 0.01)
    assert (cfg.plateau_patience, cfg.plateau_factor) == (5, 0.9)
    assert tuple(cfg.class_prompt_widths) == (64, 128, 256)
    assert cfg.backbone == "medsam_vit_b" and cfg.workdir == "runs/brats"


def test_improved_recipe_changes_only_the_extensions():
    paper = from_args(["--recipe", "paper", "--dataset", "brats"])
    improved = from_args(["--dataset", "brats"])
    changed = {k for k in vars(paper) if getattr(paper, k) != getattr(improved, k)}
    assert changed == {"recipe", "class_embedding", "negatives", "presence", "flips", "prompt"}


def test_demo_is_the_papers_recipe_on_an_accelerator_and_smaller_on_a_cpu():
    gpu, cpu = preset("demo", "gpu"), preset("demo", "cpu")
    assert (gpu.epochs, gpu.batch_size, gpu.lr, tuple(gpu.class_prompt_widths), gpu.flips) == (
        100, 16, 1e-4, (64, 128, 256), True)
    assert cpu.dataset == gpu.dataset == "demo" and cpu.weights == "pretrained"
    assert cpu.cache_embeddings and gpu.cache_embeddings


def test_overrides_and_switches():
    cfg = from_args(["--dataset", "synthetic:num_cases=4", "--epochs", "3", "--lr", "0.5",
                     "--class-prompt-widths", "8,16,32", "--no-flips", "--no-diffusion",
                     "--branches", "dense", "--loss-terms", "ce,dice", "--no-progress"])
    assert cfg.workdir == "runs/synthetic"  # a dataset's own workdir, not the demo's
    assert (cfg.epochs, cfg.lr, tuple(cfg.class_prompt_widths)) == (3, 0.5, (8, 16, 32))
    assert not cfg.flips and not cfg.diffusion and not cfg.progress
    assert cfg.branches == "dense" and tuple(cfg.loss_terms) == ("ce", "dice")


def test_unknown_loss_term_is_rejected_early():
    with pytest.raises(ValueError, match="bce"):
        from_args(["--loss-terms", "mse,bce"])
