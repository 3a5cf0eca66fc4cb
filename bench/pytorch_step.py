"""PyTorch CPU reference for the engine benchmark (`npm run bench`, bench/engines.ts): training steps of the same
models, batch and timing as the TypeScript bench, on request (see serve), so
the bench can interleave them with its own. By hand:
  echo "2 5" | MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=17179869184 \
    /usr/bin/python3 bench/pytorch_step.py --spec '{"arch": "convnet", "inChannels": 3, "numClasses": 10, "size": 32}' --batch 64
(the malloc settings are the bench's, bench/pytorch_server.ts: without them glibc's
page-fault churn slows PyTorch's steps 1.4-4x).

Run with Debian's /usr/bin/python3 (python3-torch); torch is never a runtime
dependency of selfsup. Models mirror src/nn: torchvision-style ResNet with a
CIFAR or ImageNet stem and a width multiplier, and the 3-conv CNN.
"""
import argparse
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False), nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


ARCH = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3])}


class ResNet(nn.Module):
    def __init__(self, depth=18, stem="cifar", width=64, in_channels=3, num_classes=10):
        super().__init__()
        block, counts = ARCH[depth]
        if stem == "cifar":
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(width)
        layers, inplanes = [], width
        for i, count in enumerate(counts):
            planes = width * 2**i
            blocks = []
            for j in range(count):
                blocks.append(block(inplanes, planes, (1 if i == 0 else 2) if j == 0 else 1))
                inplanes = planes * block.expansion
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ConvNet(nn.Module):
    """3x3 convs 32 (s1), 64 (s2), 128 (s2), each + BN + ReLU; GAP; linear."""

    def __init__(self, in_channels=3, num_classes=10):
        super().__init__()
        layers, c = [], in_channels
        for out, stride in [(32, 1), (64, 2), (128, 2)]:
            layers += [nn.Conv2d(c, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            c = out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def build(spec):
    if spec["arch"] == "convnet":
        return ConvNet(spec["inChannels"], spec["numClasses"])
    return ResNet(spec["depth"], spec["stem"], spec["width"], spec["inChannels"], spec["numClasses"])


class Stepper:
    """One model, optimizer and fixed batch; `step()` times one training step in ms."""

    def __init__(self, spec, batch):
        torch.manual_seed(0)
        self.model = build(spec).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.x = torch.randn(batch, spec["inChannels"], spec["size"], spec["size"])
        self.y = torch.randint(0, spec["numClasses"], (batch,))
        self.parameters = sum(p.numel() for p in self.model.parameters())

    def step(self, bf16=False):
        """bf16: the forward under CPU bf16 autocast (convolutions and linear
        layers in bfloat16, weights and optimizer in f32), as PyTorch's mixed
        precision on CPU runs; backward follows the autocast dtypes."""
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        loss.item()  # the step is finished when its loss is read
        return (time.perf_counter() - start) * 1000


def serve_stepper(stepper):
    """bench/pytorch_server.ts's protocol, for any object with `parameters`
    and `step()`: first a JSON line with the parameter count; then each stdin
    line `THREADS COUNT [bf16]` runs COUNT steps at THREADS threads (in bf16
    autocast when the third word is bf16; only this file's Stepper has it)
    and answers one JSON line with their times in ms; end of input exits."""
    print(json.dumps({"torch": torch.__version__, "parameters": stepper.parameters}), flush=True)
    for line in sys.stdin:
        words = line.split()
        threads, count = int(words[0]), int(words[1])
        bf16 = len(words) > 2 and words[2] == "bf16"
        torch.set_num_threads(threads)
        times = [stepper.step(bf16) if bf16 else stepper.step() for _ in range(count)]
        print(json.dumps({"threads": threads, "stepsMs": times}), flush=True)


def serve(spec, batch):
    serve_stepper(Stepper(spec, batch))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--spec", required=True, help="model spec as JSON (see bench/engines.ts)")
    ap.add_argument("--batch", type=int, required=True)
    args = ap.parse_args()
    serve(json.loads(args.spec), args.batch)


if __name__ == "__main__":
    main()
