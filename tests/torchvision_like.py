"""Networks with torchvision's structure and attribute names (ResNet, VGG, AlexNet), narrow and
small, so the shipped cut lists are tested without torchvision (which CPU-only torch here lacks)."""

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """torchvision.models.ResNet with BasicBlocks: its forward flattens with torch.flatten."""

    def __init__(self, widths=(4, 8, 8, 16), num_classes=10, in_channels=3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = widths[0]
        for i, w in enumerate(widths):
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w)))
            cin = w
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


class VGG(nn.Module):
    """torchvision.models.VGG: `features`, adaptive pooling to 7x7, a three-linear classifier."""

    def __init__(self, blocks=(1, 1, 2, 2, 2), batch_norm=False, width=4, hidden=32, num_classes=10):
        super().__init__()
        layers, cin = [], 3
        for b, convs in enumerate(blocks):
            cout = width * 2 ** min(b, 3)
            for _ in range(convs):
                layers += [nn.Conv2d(cin, cout, 3, padding=1)]
                layers += [nn.BatchNorm2d(cout)] if batch_norm else []
                layers += [nn.ReLU(inplace=True)]
                cin = cout
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(nn.Linear(cin * 49, hidden), nn.ReLU(True), nn.Dropout(0.5),
                                        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.5),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x):
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


class AlexNet(nn.Module):
    """torchvision.models.AlexNet, narrow."""

    def __init__(self, num_classes=10, w=4, hidden=32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(w, 2 * w, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(2 * w, 3 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(3 * w, 2 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(2 * w * 36, hidden), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, x):
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


def resnet18_like(num_classes=10):
    return ResNet(num_classes=num_classes, in_channels=1)


class SelectAdaptivePool2d(nn.Module):
    """timm's global pooling: a pool and a flatten, as submodules."""

    def __init__(self):
        super().__init__()
        self.pool, self.flatten = nn.AdaptiveAvgPool2d(1), nn.Flatten(1)

    def forward(self, x):
        return self.flatten(self.pool(x))


class TimmResNet(ResNet):
    """timm.models.ResNet's names: act1 for the stem's ReLU, global_pool, forward_features/head."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.act1 = self.relu
        del self.relu, self.avgpool
        self.global_pool = SelectAdaptivePool2d()

    def forward_features(self, x):
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x):
        return self.fc(self.global_pool(self.forward_features(x)))
