import numpy as np
import pytest
import torch

from ktedge.model.adapter import KTAdapter, drop_mask
from ktedge.model.encoders import build_encoder
from ktedge.model.kt_model import KTModel
from ktedge.model.onet import ONet, load_pretrained_onet, onet_input, onet_weights_path
from ktedge.model.metrics import roc_auc


@pytest.fixture()
def adapter():
    torch.manual_seed(0)
    a = KTAdapter(canonical_dim=32, prior_dims=[16, 24, 8], dim=32, heads=4, layers=2, mlp_ratio=2.0)
    torch.nn.init.normal_(a.out.weight, std=0.1)  # W_o starts at zero; give it weight so outputs differ
    return a.eval()


def test_drop_mask_follows_the_spec():
    g = torch.Generator().manual_seed(0)
    m = drop_mask(20000, 3, p_drop=0.5, p_all=0.25, p_canon=0.0, generator=g)
    assert m.shape == (20000, 5) and m.dtype == torch.bool
    assert m[:, 0].all() and m[:, 1].all()  # t_k and t_c always visible
    assert m[:, 2:].float().mean().item() == pytest.approx(0.75 * 0.5, abs=0.01)
    all_hidden = (~m[:, 2:]).all(1).float().mean().item()
    assert all_hidden == pytest.approx(0.25 + 0.75 * 0.5**3, abs=0.01)  # p_all, or every prior dropped alone
    m = drop_mask(20000, 3, p_drop=0.0, p_all=0.0, p_canon=0.3, generator=g)
    assert m[:, 2:].all() and (~m[:, 1]).float().mean().item() == pytest.approx(0.3, abs=0.01)


def test_inference_token_set_is_tk_tc_and_equals_all_priors_masked(adapter):
    e_c = torch.randn(4, 32)
    priors = [torch.randn(4, 16), torch.randn(4, 24), torch.randn(4, 8)]
    hidden = torch.tensor([[True, True, False, False, False]]).expand(4, -1)
    deploy = adapter(e_c)  # sequence [t_k, t_c] only
    torch.testing.assert_close(deploy, adapter(e_c, priors, hidden), atol=1e-5, rtol=1e-5)
    # A masked prior token has no influence; a visible one does.
    mask = torch.tensor([[True, True, True, False, True]]).expand(4, -1)
    changed = [priors[0], torch.randn(4, 24) * 5, priors[2]]
    torch.testing.assert_close(adapter(e_c, priors, mask), adapter(e_c, changed, mask), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(adapter(e_c, priors), adapter(e_c, changed), atol=1e-3)


def test_zero_initialised_output_starts_at_the_canonical_embedding():
    a = KTAdapter(32, [16], 32, 4, 1, 2.0)
    e_c = torch.randn(3, 32)
    torch.testing.assert_close(a(e_c, [torch.randn(3, 16)]), e_c)


def test_eval_runs_no_prior_encoder(tiny_cfg):
    model = KTModel(tiny_cfg)
    calls = {i: 0 for i in range(len(model.priors))}
    for i, p in enumerate(model.priors):
        p.register_forward_hook(lambda *a, i=i: calls.__setitem__(i, calls[i] + 1))
    x = torch.rand(2, 3, 64, 64) * 255
    model.eval()(x)
    assert sum(calls.values()) == 0
    model.train()(x)
    assert all(c == 1 for c in calls.values())
    assert not model.canonical.training and not any(p.training for p in model.priors)  # frozen BN
    model.eval().run(x, "ensemble")
    assert all(c == 2 for c in calls.values())


@pytest.mark.parametrize("backbone, width", [("mobilenet", 16), ("resnet", 16), ("vit", 64)])
def test_backbones_export_with_torch_export(tiny_cfg, backbone, width):
    from dataclasses import replace

    enc = build_encoder(replace(tiny_cfg.model.canonical, backbone=backbone, width=width), 64).eval()
    x = torch.rand(2, 3, 64, 64) * 255
    ep = torch.export.export(enc, (x,))
    torch.testing.assert_close(ep.module()(x), enc(x))


def test_onet_loads_the_real_weights_and_has_its_heads():
    sd = torch.load(onet_weights_path(), weights_only=True)
    assert len(sd) == 21
    net = load_pretrained_onet()
    box, landmarks, prob = net(onet_input(torch.rand(3, 3, 48, 48) * 255))
    assert box.shape == (3, 4) and landmarks.shape == (3, 10) and prob.shape == (3, 2)
    torch.testing.assert_close(prob.sum(1), torch.ones(3))
    assert net.features(onet_input(torch.rand(2, 3, 64, 64) * 255)).shape == (2, 256)


def lfw_subset_rgb() -> tuple[torch.Tensor, np.ndarray]:
    """scikit-image's 100 real LFW face crops then 100 non-face crops (25x25 grey) as RGB 0..255."""
    from skimage.data import lfw_subset

    grey = torch.from_numpy(lfw_subset()).float() * 255  # (200, 25, 25)
    return grey[:, None].expand(-1, 3, -1, -1), np.r_[np.ones(100), np.zeros(100)]


def test_onet_separates_real_lfw_faces_from_non_faces():
    images, labels = lfw_subset_rgb()
    with torch.no_grad():
        face_prob = load_pretrained_onet()(onet_input(images))[2][:, 1].numpy()
    assert roc_auc(face_prob, labels) == 1.0
    assert ((face_prob > 0.5) == labels).mean() >= 0.95
    assert isinstance(ONet(), torch.nn.Module)
