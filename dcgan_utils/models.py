"""Every generator and discriminator of the two seed write-ups, with the experiments' knobs as arguments.

Architectures (``arch`` in :func:`build_models`):

* ``"dcgan"``: seed 000. Transposed-convolution G with filters 1024/512/256 (32x32) or 1024/512/256/128
  (64x64, the DCGAN paper), conv D mirroring it, biases on, Sigmoid output.
* ``"transposed"``: seed 004's transposed network (``ngf = ndf = 64``: 512/256/128/64), same shape as
  ``"dcgan"`` but ``bias=False``. Its BatchNorm ``eps`` is the knob of the eps experiment (1e-5 vs 0.8).
* ``"upsample"``: seed 004's upsample network (from a popular PyTorch GAN repository): a Linear layer to a
  128 x size/4 x size/4 map, then Upsample + 3x3 convolutions, BatchNorm with ``eps=0.8``. Its D uses
  3x3 stride-2 convolutions with Dropout2d(0.25) and a Linear head.
* ``"upsample_conv"``: seed 004's "new upsample network": nearest Upsample x8 / x4, each followed by a
  4x4 stride-2 convolution, so the image grows 1 -> 8 -> 4 -> 16 -> 8 ... -> 64 without transposed convs.

``width`` is the widest layer (G's first, D's last); every other layer halves from it as in the seeds, so
``width=128`` gives a network a 2-core CPU can train while keeping the seed's shape.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LATENT_DIM = 100  # the length of z in both seeds
SUPPORTED_SIZES = (32, 64)
ARCHS = ("dcgan", "transposed", "upsample", "upsample_conv")

# The seeds' widths: G's widest layer, D's widest layer.
SEED_WIDTHS = {
    "dcgan": (1024, 1024),  # seed 000: 1024/512/256(/128)
    "transposed": (512, 512),  # seed 004: ngf = ndf = 64 -> ngf*8 = 512
    "upsample": (128, 128),  # seed 004: 128 channels in G, 16/32/64/128 in D
    "upsample_conv": (512, 512),  # seed 004: g_feat (not given; 512 like ngf*8), d_feat*16 = 512
}
SEED_BN_EPS = {"dcgan": 1e-5, "transposed": 1e-5, "upsample": 0.8, "upsample_conv": 1e-5}
CONDITIONAL_ARCHS = ("dcgan", "transposed")  # the transposed networks take class labels (notebook 11)


def _check_size(image_size: int) -> int:
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size={image_size} is not supported: use one of {SUPPORTED_SIZES}")
    return int(math.log2(image_size // 4))  # number of x2 steps from a 4x4 map: 3 for 32, 4 for 64


def _check_width(width: int, divisor: int, what: str) -> None:
    if width < divisor or width % divisor:
        raise ValueError(f"{what}={width} must be a positive multiple of {divisor} (each layer halves it)")


def _as_map(z: torch.Tensor) -> torch.Tensor:
    """Accept latents as (N, 100) or (N, 100, 1, 1)."""
    return z.view(z.shape[0], -1, 1, 1)


class ClassInput(nn.Module):
    """A conditional G's class input, a one-hot vector beside z (Mirza and Osindero 2014), and how often each
    class is drawn.

    ``labels`` may be class indices (N,) or, to walk between classes, class weights (N, K) that mix them.
    ``frequencies`` (the training set's class shares, set by the trainer and saved with the weights) is what
    :func:`~dcgan_utils.sampling.generate` draws classes from when none are asked for. A fixed one-hot, not a
    learned vector: a learned one grew until it drowned z, and G drew one image per class (notebook 11).
    """

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.register_buffer("frequencies", torch.full((num_classes,), 1.0 / num_classes))

    def forward(self, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        if labels is None:
            raise ValueError(f"this generator draws the class it is given: pass labels (0..{self.num_classes - 1}), "
                             "e.g. generate(G, 16, labels=3)")
        if labels.is_floating_point():
            return labels.reshape(n, self.num_classes).to(self.frequencies)
        if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < self.num_classes:
            raise ValueError(f"labels must be in 0..{self.num_classes - 1}, got {labels.min()}..{labels.max()}")
        return F.one_hot(labels.reshape(n).long(), self.num_classes).to(self.frequencies)


class TransposedConvGenerator(nn.Module):
    """Seed 000 / seed 004 transposed G: ConvTranspose 4x4 stride 2, BatchNorm, ReLU; Tanh out.

    ``width`` is the first layer's filters (1024 in seed 000, ``ngf*8`` in seed 004); each later layer halves.
    """

    def __init__(self, image_size: int = 32, channels: int = 1, width: int = 1024, latent_dim: int = LATENT_DIM,
                 bias: bool = True, bn_eps: float = 1e-5, num_classes: int = 0):
        super().__init__()
        steps = _check_size(image_size)
        _check_width(width, 2 ** (steps - 1), "generator width")
        self.latent_dim = latent_dim
        self.labels = ClassInput(num_classes) if num_classes else None  # a class-conditional G (notebook 11)
        filters = [width // 2 ** i for i in range(steps)]  # e.g. [1024, 512, 256] for 32x32
        inputs = latent_dim + num_classes
        layers: list[nn.Module] = [nn.ConvTranspose2d(inputs, filters[0], 4, 1, 0, bias=bias),
                                   nn.BatchNorm2d(filters[0], eps=bn_eps), nn.ReLU(True)]
        for c_in, c_out in zip(filters, filters[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=bias),
                       nn.BatchNorm2d(c_out, eps=bn_eps), nn.ReLU(True)]
        layers.append(nn.ConvTranspose2d(filters[-1], channels, 4, 2, 1, bias=bias))
        self.main_module = nn.Sequential(*layers)
        self.output = nn.Tanh()

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = _as_map(z)
        if self.labels is not None:  # the class's learned vector goes in beside z (Mirza and Osindero 2014)
            z = torch.cat([z, self.labels(labels, z.shape[0])[:, :, None, None].to(z.dtype)], dim=1)
        return self.output(self.main_module(z))


class UpsampleGenerator(nn.Module):
    """Seed 004 upsample G: Linear -> (width x size/4 x size/4), [BatchNorm], 2 x (Upsample x2, 3x3 conv, BN, LeakyReLU).

    ``first_batchnorm=False`` is seed 004's ablation 2. ``bn_eps=0.8`` is the seed's ``BatchNorm2d(128, 0.8)``.
    """

    def __init__(self, image_size: int = 64, channels: int = 3, width: int = 128, latent_dim: int = LATENT_DIM,
                 bn_eps: float = 0.8, first_batchnorm: bool = True):
        super().__init__()
        _check_size(image_size)
        _check_width(width, 2, "generator width")
        self.latent_dim, self.width, self.init_size = latent_dim, width, image_size // 4
        self.l1 = nn.Sequential(nn.Linear(latent_dim, width * self.init_size ** 2))
        first = [nn.BatchNorm2d(width)] if first_batchnorm else []  # the seed leaves this one at eps=1e-5
        self.conv_blocks = nn.Sequential(
            *first,
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width, 3, stride=1, padding=1),
            nn.BatchNorm2d(width, bn_eps),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width // 2, 3, stride=1, padding=1),
            nn.BatchNorm2d(width // 2, bn_eps),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(width // 2, channels, 3, stride=1, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        out = self.l1(z.reshape(z.shape[0], -1))
        return self.conv_blocks(out.view(out.shape[0], self.width, self.init_size, self.init_size))


class UpsampleConvGenerator(nn.Module):
    """Seed 004's "new upsample network": nearest Upsample then a 4x4 stride-2 conv, no transposed convolutions.

    1x1 -> x8 -> conv/2 = 4x4, then (x4, conv/2) doubles the size each block. The seed also defines an unused
    ``bn5``; it is left out because it never runs.
    """

    def __init__(self, image_size: int = 64, channels: int = 3, width: int = 512, latent_dim: int = LATENT_DIM,
                 bn_eps: float = 1e-5):
        super().__init__()
        steps = _check_size(image_size)
        _check_width(width, 2 ** steps, "generator width")
        self.latent_dim = latent_dim
        filters = [width // 2 ** i for i in range(steps + 1)]  # [g, g/2, g/4, g/8(, g/16)]
        blocks: list[nn.Module] = [nn.Upsample(scale_factor=8), nn.Conv2d(latent_dim, filters[0], 4, 2, 1, bias=False),
                                   nn.BatchNorm2d(filters[0], eps=bn_eps), nn.ReLU(True)]
        for c_in, c_out in zip(filters, filters[1:-1]):
            blocks += [nn.Upsample(scale_factor=4), nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(c_out, eps=bn_eps), nn.ReLU(True)]
        blocks += [nn.Upsample(scale_factor=4), nn.Conv2d(filters[-2], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main_module = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.main_module(_as_map(z))


class ConvDiscriminator(nn.Module):
    """Seed 000 / seed 004 D: 4x4 stride-2 convs, LeakyReLU(0.2), BatchNorm after the first; 4x4 conv to 1; Sigmoid.

    ``width`` is the last layer's filters (1024 in seed 000, ``ndf*8`` in seed 004). ``forward`` returns a
    probability as in the seeds; training uses :meth:`logits` with a numerically stable BCE.
    """

    def __init__(self, image_size: int = 32, channels: int = 1, width: int = 1024, bias: bool = True,
                 bn_eps: float = 1e-5, batchnorm: bool = True, num_classes: int = 0):
        super().__init__()
        steps = _check_size(image_size)
        _check_width(width, 2 ** (steps - 1), "discriminator width")
        filters = [width // 2 ** i for i in reversed(range(steps))]  # e.g. [256, 512, 1024] for 32x32
        layers: list[nn.Module] = [nn.Conv2d(channels, filters[0], 4, 2, 1, bias=bias), nn.LeakyReLU(0.2, inplace=True)]
        for c_in, c_out in zip(filters, filters[1:]):
            norm = [nn.BatchNorm2d(c_out, eps=bn_eps)] if batchnorm else []
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=bias), *norm, nn.LeakyReLU(0.2, inplace=True)]
        self.main_module = nn.Sequential(*layers)
        self.output = nn.Sequential(nn.Conv2d(filters[-1], 1, 4, 1, 0, bias=bias), nn.Sigmoid())
        # a class-conditional D scores "real, and of this class" with a projection (Miyato and Koyama 2018)
        self.projection = nn.Embedding(num_classes, filters[-1]) if num_classes else None
        if self.projection is not None:
            nn.init.xavier_uniform_(self.projection.weight)  # N(0, 1) rows would swamp the score at the start

    def logits(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's score before the Sigmoid, shape (N,); for a conditional D, + <class vector, mean features>."""
        features = self.main_module(x)
        score = self.output[0](features).flatten()
        if self.projection is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: pass the images' labels")
            pooled = features.mean(dim=(2, 3))  # averaged, not summed: the class term starts as small as the rest
            score = score + (self.projection(labels) * pooled).sum(dim=1).to(score.dtype)
        return score

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.projection is not None:
            return torch.sigmoid(self.logits(x, labels)).view(-1, 1, 1, 1)
        return self.output(self.main_module(x))


class UpsampleDiscriminator(nn.Module):
    """Seed 004 upsample D: 4 blocks of 3x3 stride-2 conv, LeakyReLU, Dropout2d, BatchNorm (not on the first); Linear.

    The blocks have width/8, width/4, width/2, width filters (16/32/64/128 in the seed). ``dropout=0.25`` is the
    repository's Dropout2d that seed 004's ablation 1 removes; ``dropout=0`` removes it.
    """

    def __init__(self, image_size: int = 64, channels: int = 3, width: int = 128, bn_eps: float = 0.8,
                 dropout: float = 0.25):
        super().__init__()
        _check_size(image_size)
        _check_width(width, 8, "discriminator width")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout={dropout} must be in [0, 1)")

        def block(c_in: int, c_out: int, bn: bool = True) -> list[nn.Module]:
            layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            if dropout:
                layers.append(nn.Dropout2d(dropout))
            if bn:
                layers.append(nn.BatchNorm2d(c_out, bn_eps))
            return layers

        f = [width // 8, width // 4, width // 2, width]
        self.model = nn.Sequential(*block(channels, f[0], bn=False), *block(f[0], f[1]), *block(f[1], f[2]),
                                   *block(f[2], f[3]))
        ds_size = image_size // 2 ** 4
        self.adv_layer = nn.Sequential(nn.Linear(width * ds_size ** 2, 1), nn.Sigmoid())

    def logits(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D's score before the Sigmoid, shape (N,)."""
        return self.adv_layer[0](self.model(x).flatten(1)).flatten()

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.adv_layer(self.model(x).flatten(1))


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN paper's init: conv/linear weights N(0, 0.02), BatchNorm weight N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def _add_spectral_norm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, (nn.Conv2d, nn.Linear)):
            setattr(module, name, nn.utils.parametrizations.spectral_norm(child))
        else:
            _add_spectral_norm(child)


def build_models(arch: str = "dcgan", image_size: int = 32, channels: int = 1, width: int | None = None,
                 g_width: int | None = None, d_width: int | None = None, bn_eps: float | None = None,
                 first_batchnorm: bool = True, dropout: float = 0.25, spectral_norm: bool = False,
                 init: str = "dcgan", latent_dim: int = LATENT_DIM, d_batchnorm: bool = True,
                 num_classes: int = 0) -> tuple[nn.Module, nn.Module]:
    """Build a (generator, discriminator) pair from the seeds.

    Args:
        arch: one of ``"dcgan"`` (seed 000), ``"transposed"``, ``"upsample"``, ``"upsample_conv"`` (seed 004).
        image_size: 32 or 64.
        channels: 1 (MNIST, FashionMNIST) or 3 (faces).
        width: widest layer of both networks; ``None`` keeps the seed's (see ``SEED_WIDTHS``).
        g_width, d_width: override ``width`` for one network only (e.g. a narrower D).
        bn_eps: BatchNorm eps in both networks; ``None`` keeps the seed's (0.8 for ``"upsample"``, else 1e-5).
        first_batchnorm: ``"upsample"`` only; ``False`` is seed 004's ablation 2.
        dropout: ``"upsample"`` D only; ``0`` is seed 004's ablation 1.
        spectral_norm: wrap D's conv/linear weights in spectral normalisation.
        init: ``"dcgan"`` (paper init) or ``"pytorch"`` (PyTorch defaults, as the seed code ran).
        d_batchnorm: ``False`` removes D's BatchNorm layers (``"dcgan"``, ``"transposed"``, ``"upsample_conv"``
            D; notebook 11: a D scored one image at a time, as spectral norm and R1 assume).
        num_classes: ``> 0`` makes both networks class-conditional (``"dcgan"`` and ``"transposed"``): G takes a
            learned class vector beside z, D a projection head (notebook 11).
    """
    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r} is not supported: use one of {', '.join(ARCHS)}")
    _check_size(image_size)
    if channels not in (1, 3):
        raise ValueError(f"channels={channels} is not supported: use 1 (grayscale) or 3 (RGB)")
    if init not in ("dcgan", "pytorch"):
        raise ValueError(f"init={init!r} is not supported: use 'dcgan' or 'pytorch'")
    if bn_eps is not None and not bn_eps > 0:
        raise ValueError(f"bn_eps={bn_eps} must be > 0")
    if num_classes and arch not in CONDITIONAL_ARCHS:
        raise ValueError(f"a class-conditional GAN needs arch {' or '.join(map(repr, CONDITIONAL_ARCHS))}, not {arch!r}")
    if not d_batchnorm and arch == "upsample":
        raise ValueError("d_batchnorm=False is for the 'dcgan', 'transposed' and 'upsample_conv' discriminators")
    seed_g, seed_d = SEED_WIDTHS[arch]
    gw = g_width or width or seed_g
    dw = d_width or width or seed_d
    eps = SEED_BN_EPS[arch] if bn_eps is None else bn_eps
    common = dict(image_size=image_size, channels=channels)
    if arch in ("dcgan", "transposed"):
        bias = arch == "dcgan"
        generator: nn.Module = TransposedConvGenerator(**common, width=gw, latent_dim=latent_dim, bias=bias, bn_eps=eps,
                                                       num_classes=num_classes)
        discriminator: nn.Module = ConvDiscriminator(**common, width=dw, bias=bias, bn_eps=eps, batchnorm=d_batchnorm,
                                                     num_classes=num_classes)
    elif arch == "upsample":
        generator = UpsampleGenerator(**common, width=gw, latent_dim=latent_dim, bn_eps=eps,
                                      first_batchnorm=first_batchnorm)
        discriminator = UpsampleDiscriminator(**common, width=dw, bn_eps=eps, dropout=dropout)
    else:
        generator = UpsampleConvGenerator(**common, width=gw, latent_dim=latent_dim, bn_eps=eps)
        discriminator = ConvDiscriminator(**common, width=dw, bias=False, bn_eps=eps, batchnorm=d_batchnorm)
    if init == "dcgan":
        dcgan_init(generator)
        dcgan_init(discriminator)
    if spectral_norm:
        _add_spectral_norm(discriminator)
    return generator, discriminator


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def layer_table(module: nn.Module, input_shape: tuple[int, ...]) -> list[dict]:
    """Each leaf layer's name, type, output shape and parameter count for one input of ``input_shape``.

    Used by the architecture notebook to print the seeds' "State (1024x4x4)" comments as a table.
    """
    rows: list[dict] = []
    hooks = []
    for name, layer in module.named_modules():
        if len(list(layer.children())) == 0:
            def hook(mod, _inp, out, name=name):
                rows.append({"layer": name, "type": type(mod).__name__, "output": tuple(out.shape[1:]),
                             "params": sum(p.numel() for p in mod.parameters())})
            hooks.append(layer.register_forward_hook(hook))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        module.train(was_training)
    return rows
