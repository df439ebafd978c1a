import pytest
import torch
from torch import nn

import dcgan_utils
from dcgan_utils import build_models, count_parameters
from dcgan_utils.models import layer_table

import seed_reference as seed


def _same_outputs(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    ours.eval(), theirs.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("size, G_ref, D_ref, params_g, params_d", [
    (32, seed.Seed000Generator32, seed.Seed000Discriminator32, 12_133_633, 10_511_105),
    (64, seed.Seed000Generator64, seed.Seed000Discriminator64, 12_656_257, 11_033_985),
])
@pytest.mark.parametrize("channels", [1, 3])
def test_seed000_networks_are_the_seed_code(size, G_ref, D_ref, params_g, params_d, channels):
    G, D = build_models("dcgan", size, channels)
    ref_g, ref_d = G_ref(channels), D_ref(channels)
    assert count_parameters(G) == count_parameters(ref_g)
    assert count_parameters(D) == count_parameters(ref_d)
    if channels == 1:  # the numbers in docs and notebook 01
        assert (count_parameters(G), count_parameters(D)) == (params_g, params_d)
    # Same layer names and shapes: the seed's weights load strictly and give the same outputs.
    G.load_state_dict(ref_g.state_dict(), strict=True)
    D.load_state_dict(ref_d.state_dict(), strict=True)
    z = torch.randn(3, 100, 1, 1)
    _same_outputs(G, ref_g, z)
    x = torch.rand(3, channels, size, size) * 2 - 1
    _same_outputs(D, ref_d, x)
    assert G(z).shape == (3, channels, size, size)
    assert D(x).shape == (3, 1, 1, 1)


def test_seed004_transposed_is_the_seed_code():
    G, D = build_models("transposed", 64, 3)
    ref_g, ref_d = seed.Seed004TransposedG(), seed.Seed004TransposedD()
    assert count_parameters(G) == count_parameters(ref_g) == 3_576_704
    assert count_parameters(D) == count_parameters(ref_d) == 2_765_568
    seed.copy_in_order(ref_g, G)
    seed.copy_in_order(ref_d, D)
    _same_outputs(G, ref_g, torch.randn(2, 100, 1, 1))
    _same_outputs(D, ref_d, torch.randn(2, 3, 64, 64))
    assert all(m.bias is None for m in G.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


def test_seed004_upsample_is_the_seed_code():
    # dropout=0 is the code as the seed prints it; dropout=0.25 (the default) is the repository's D it ablates.
    G, D = build_models("upsample", 64, 3, dropout=0)
    ref_g, ref_d = seed.Seed004UpsampleG(), seed.Seed004UpsampleD()
    G.load_state_dict(ref_g.state_dict(), strict=True)
    D.load_state_dict(ref_d.state_dict(), strict=True)
    z = torch.randn(2, 100)
    _same_outputs(G, ref_g, z)
    _same_outputs(D, ref_d, torch.randn(2, 3, 64, 64))
    assert G(z.view(2, 100, 1, 1)).shape == (2, 3, 64, 64)  # also takes the (N, 100, 1, 1) fixed-noise shape
    eps = [m.eps for m in G.modules() if isinstance(m, nn.BatchNorm2d)]
    assert eps == [1e-5, 0.8, 0.8]


def test_seed004_new_upsample_network_is_the_seed_code():
    G, _ = build_models("upsample_conv", 64, 3)
    ref = seed.Seed004NewUpsampleG()
    order = [ref.conv1, ref.bn1, ref.conv2, ref.bn2, ref.conv3, ref.bn3, ref.conv4, ref.bn4, ref.conv5]
    ours = [m for m in G.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    assert len(ours) == len(order)
    for mine, theirs in zip(ours, order):
        mine.load_state_dict(theirs.state_dict(), strict=True)
    assert count_parameters(G) == count_parameters(ref) - 2 * 3  # the seed's unused bn5 is not built
    _same_outputs(G, ref, torch.randn(2, 100, 1, 1))


@pytest.mark.parametrize("arch", dcgan_utils.ARCHS)
@pytest.mark.parametrize("size", [32, 64])
def test_every_arch_and_size_has_the_right_shapes(arch, size):
    G, D = build_models(arch, size, channels=1, width=64)
    images = G(torch.randn(5, 100, 1, 1))
    assert images.shape == (5, 1, size, size)
    assert images.min() >= -1 and images.max() <= 1
    assert D.logits(images).shape == (5,)
    torch.testing.assert_close(D(images).flatten(), torch.sigmoid(D.logits(images)))


def test_width_halves_through_the_layers():
    G, D = build_models("dcgan", 64, 1, width=256)
    g_filters = [m.out_channels for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    d_filters = [m.out_channels for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert g_filters == [256, 128, 64, 32, 1]
    assert d_filters == [32, 64, 128, 256, 1]
    G, D = build_models("dcgan", 32, 1, g_width=64, d_width=512)
    assert [m.out_channels for m in G.modules() if isinstance(m, nn.ConvTranspose2d)] == [64, 32, 16, 1]
    assert [m.out_channels for m in D.modules() if isinstance(m, nn.Conv2d)] == [128, 256, 512, 1]


def test_knobs_change_the_network():
    G, D = build_models("transposed", 64, 1, bn_eps=0.8)
    assert {m.eps for m in list(G.modules()) + list(D.modules()) if isinstance(m, nn.BatchNorm2d)} == {0.8}
    G, _ = build_models("upsample", 64, 1, first_batchnorm=False)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) == 2
    _, D = build_models("upsample", 64, 1, dropout=0.25)
    assert sum(isinstance(m, nn.Dropout2d) for m in D.modules()) == 4
    _, D = build_models("upsample", 64, 1, dropout=0)
    assert not any(isinstance(m, nn.Dropout2d) for m in D.modules())
    _, D = build_models("dcgan", 32, 1, width=64, spectral_norm=True)
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert all(nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)


def test_dcgan_init_and_pytorch_init():
    torch.manual_seed(0)
    G, D = build_models("dcgan", 32, 1)
    conv = G.main_module[3].weight
    assert abs(conv.std().item() - 0.02) < 0.002 and abs(conv.mean().item()) < 0.002
    bn = D.main_module[3]
    assert abs(bn.weight.mean().item() - 1) < 0.01 and 0.01 < bn.weight.std().item() < 0.03
    assert torch.all(bn.bias == 0) and torch.all(G.main_module[0].bias == 0)
    G, _ = build_models("dcgan", 32, 1, init="pytorch")
    assert G.main_module[3].weight.std().item() < 0.015  # PyTorch's kaiming-uniform bound for 4x4x512 fan-in
    assert torch.all(G.main_module[4].weight == 1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_size=128), "image_size=128 is not supported: use one of (32, 64)"),
    (dict(arch="wgan"), "arch='wgan' is not supported: use one of dcgan, transposed, upsample, upsample_conv"),
    (dict(channels=2), "channels=2 is not supported"),
    (dict(width=102), "width=102 must be a positive multiple of 4"),
    (dict(init="xavier"), "init='xavier' is not supported"),
    (dict(bn_eps=0), "bn_eps=0 must be > 0"),
    (dict(arch="upsample", dropout=1.5), "dropout=1.5 must be in [0, 1)"),
])
def test_bad_arguments_name_what_is_supported(kwargs, message):
    with pytest.raises(ValueError) as err:
        build_models(**kwargs)
    assert message in str(err.value)


def test_layer_table_lists_the_seed_states():
    G, _ = build_models("dcgan", 32, 1)
    rows = layer_table(G, (100, 1, 1))
    outputs = [r["output"] for r in rows if r["type"] == "ConvTranspose2d"]
    assert outputs == [(1024, 4, 4), (512, 8, 8), (256, 16, 16), (1, 32, 32)]
    assert sum(r["params"] for r in rows) == count_parameters(G)
