"""The seed write-ups' architectures, typed in as the seeds print them (../shared/seeds/000_*, 004_*).

The tests load these modules' weights into dcgan_utils' models to prove the course builds exactly the seeds'
networks. Only the class wrappers (and the forward of the seed 004 fragments) are added.
"""
from torch import nn


class Seed000Generator32(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.main_module = nn.Sequential(
            nn.ConvTranspose2d(in_channels=100, out_channels=1024, kernel_size=4, stride=1, padding=0),
            nn.BatchNorm2d(num_features=1024), nn.ReLU(True),
            nn.ConvTranspose2d(in_channels=1024, out_channels=512, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(num_features=512), nn.ReLU(True),
            nn.ConvTranspose2d(in_channels=512, out_channels=256, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(num_features=256), nn.ReLU(True),
            nn.ConvTranspose2d(in_channels=256, out_channels=channels, kernel_size=4, stride=2, padding=1))
        self.output = nn.Tanh()

    def forward(self, x):
        return self.output(self.main_module(x))


class Seed000Generator64(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.main_module = nn.Sequential(
            nn.ConvTranspose2d(in_channels=100, out_channels=1024, kernel_size=4, stride=1, padding=0),
            nn.BatchNorm2d(num_features=1024), nn.ReLU(True),
            nn.ConvTranspose2d(in_channels=1024, out_channels=512, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(num_features=512), nn.ReLU(True),
            nn.ConvTranspose2d(in_channels=512, out_channels=256, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(num_features=256), nn.ReLU(True),
            nn.ConvTranspose2d(in_channels=256, out_channels=128, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(num_features=128), nn.ReLU(True),
            nn.ConvTranspose2d(in_channels=128, out_channels=channels, kernel_size=4, stride=2, padding=1))
        self.output = nn.Tanh()

    def forward(self, x):
        return self.output(self.main_module(x))


class Seed000Discriminator32(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.main_module = nn.Sequential(
            nn.Conv2d(in_channels=channels, out_channels=256, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(in_channels=256, out_channels=512, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(512), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(in_channels=512, out_channels=1024, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(1024), nn.LeakyReLU(0.2, inplace=True))
        self.output = nn.Sequential(
            nn.Conv2d(in_channels=1024, out_channels=1, kernel_size=4, stride=1, padding=0), nn.Sigmoid())

    def forward(self, x):
        return self.output(self.main_module(x))


class Seed000Discriminator64(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.main_module = nn.Sequential(
            nn.Conv2d(in_channels=channels, out_channels=128, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(in_channels=128, out_channels=256, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(256), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(in_channels=256, out_channels=512, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(512), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(in_channels=512, out_channels=1024, kernel_size=4, stride=2, padding=1),
            nn.BatchNorm2d(1024), nn.LeakyReLU(0.2, inplace=True))
        self.output = nn.Sequential(
            nn.Conv2d(in_channels=1024, out_channels=1, kernel_size=4, stride=1, padding=0), nn.Sigmoid())

    def forward(self, x):
        return self.output(self.main_module(x))


class Seed004TransposedG(nn.Module):
    def __init__(self, z=100, ngf=64, c=3):
        super().__init__()
        self.g_conv_block = nn.Sequential(
            nn.ConvTranspose2d(z, ngf * 8, kernel_size=4, stride=1, padding=0, bias=False),
            nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, c, kernel_size=4, stride=2, padding=1, bias=False),
            nn.Tanh())

    def forward(self, x):
        return self.g_conv_block(x)


class Seed004TransposedD(nn.Module):
    def __init__(self, ndf=64, c=3):
        super().__init__()
        self.d_conv_block = nn.Sequential(
            nn.Conv2d(c, ndf, kernel_size=4, stride=2, padding=1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=1, padding=0, bias=False),
            nn.Sigmoid())

    def forward(self, x):
        return self.d_conv_block(x)


class Seed004UpsampleG(nn.Module):
    def __init__(self, img_size=64, latent_dim=100, channels=3):
        super().__init__()
        self.init_size = img_size // 4
        self.l1 = nn.Sequential(nn.Linear(latent_dim, 128 * self.init_size ** 2))
        self.conv_blocks = nn.Sequential(
            nn.BatchNorm2d(128),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 128, 3, stride=1, padding=1),
            nn.BatchNorm2d(128, 0.8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(128, 64, 3, stride=1, padding=1),
            nn.BatchNorm2d(64, 0.8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(64, channels, 3, stride=1, padding=1),
            nn.Tanh(),
        )

    def forward(self, z):
        out = self.l1(z)
        return self.conv_blocks(out.view(out.shape[0], 128, self.init_size, self.init_size))


class Seed004UpsampleD(nn.Module):
    def __init__(self, img_size=64, channels=3):
        super().__init__()

        def discriminator_block(in_filters, out_filters, bn=True):
            block = [nn.Conv2d(in_filters, out_filters, 3, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            if bn:
                block.append(nn.BatchNorm2d(out_filters, 0.8))
            return block

        self.model = nn.Sequential(
            *discriminator_block(channels, 16, bn=False),
            *discriminator_block(16, 32),
            *discriminator_block(32, 64),
            *discriminator_block(64, 128),
        )
        ds_size = img_size // 2 ** 4
        self.adv_layer = nn.Sequential(nn.Linear(128 * ds_size ** 2, 1), nn.Sigmoid())

    def forward(self, img):
        return self.adv_layer(self.model(img).view(img.shape[0], -1))


class Seed004NewUpsampleG(nn.Module):
    def __init__(self, latent_dim=100, g_feat=512, channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(latent_dim, g_feat, kernel_size=4, stride=2, padding=1, bias=False)
        self.conv2 = nn.Conv2d(g_feat, g_feat // 2, kernel_size=4, stride=2, padding=1, bias=False)
        self.conv3 = nn.Conv2d(g_feat // 2, g_feat // 4, kernel_size=4, stride=2, padding=1, bias=False)
        self.conv4 = nn.Conv2d(g_feat // 4, g_feat // 8, kernel_size=4, stride=2, padding=1, bias=False)
        self.conv5 = nn.Conv2d(g_feat // 8, channels, kernel_size=4, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(g_feat)
        self.bn2 = nn.BatchNorm2d(g_feat // 2)
        self.bn3 = nn.BatchNorm2d(g_feat // 4)
        self.bn4 = nn.BatchNorm2d(g_feat // 8)
        self.bn5 = nn.BatchNorm2d(channels)  # defined by the seed, never used in its forward
        self.upsample_1 = nn.Upsample(scale_factor=8)
        self.upsample_2 = nn.Upsample(scale_factor=4)
        self.relu = nn.ReLU(True)
        self.tanh = nn.Tanh()

    def forward(self, reshape):
        first_block = self.relu(self.bn1(self.conv1(self.upsample_1(reshape))))
        second_block = self.relu(self.bn2(self.conv2(self.upsample_2(first_block))))
        third_block = self.relu(self.bn3(self.conv3(self.upsample_2(second_block))))
        fourth_block = self.relu(self.bn4(self.conv4(self.upsample_2(third_block))))
        final_block = self.conv5(self.upsample_2(fourth_block))
        return self.tanh(final_block)


def copy_in_order(source: nn.Module, target: nn.Module) -> None:
    """Copy ``source``'s parameters and buffers into ``target`` by position, requiring equal shapes."""
    src, dst = list(source.state_dict().values()), target.state_dict()
    assert len(src) == len(dst), (len(src), len(dst))
    for (name, value), other in zip(dst.items(), src):
        assert value.shape == other.shape, (name, value.shape, other.shape)
    target.load_state_dict(dict(zip(dst.keys(), src)))
