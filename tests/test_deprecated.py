"""Names kept for one release under their old spelling: each still works and says what replaced
it (a DeprecationWarning)."""

import sys

import pytest


def test_package_presets_is_sam_presets():
    import automedsam_jax

    with pytest.warns(DeprecationWarning, match="SAM_PRESETS"):
        presets = automedsam_jax.PRESETS
    assert presets is automedsam_jax.SAM_PRESETS
    with pytest.raises(AttributeError):
        automedsam_jax.NO_SUCH_NAME


def test_predictor_module_is_the_inference_one():
    sys.modules.pop("automedsam_jax.predictor", None)
    with pytest.warns(DeprecationWarning, match="automedsam_jax.inference"):
        from automedsam_jax.predictor import SamPredictor
    from automedsam_jax.inference import SamPredictor as current

    assert SamPredictor is current
