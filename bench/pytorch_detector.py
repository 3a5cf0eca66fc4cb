"""PyTorch CPU reference for the detector's fine-tuning speed (`npm run bench:transfer -- --speed`,
bench/transfer.ts): torchvision's Mask R-CNN built to the shape of src/detect/mask_rcnn.ts
(defaultMaskRcnnSettings), its training step timed on random images with 1-4 random boxes
and masks each. By hand:
  /usr/bin/python3 bench/pytorch_detector.py --batch 8 --steps 5 --threads 2

  - body: ResNet-18 at the same width with an ImageNet stem (bench/pytorch_step.py's ResNet),
    res2..res5 as the FPN's inputs; BN trained over the batch (not frozen);
  - FPN: torchvision's FeaturePyramidNetwork, 2 * width channels, BN after the lateral and the
    output convs (detectron2's norm), P2-P5 only (extra_blocks None: no P6 / max-pool level);
  - RPN: anchors 16/32/64/128 on P2-P5, ratios 0.5/1/2, 256 anchors per image (half positive),
    1000 pre-NMS per level, 500 post-NMS (train) / 300 (test), NMS 0.7;
  - RoI heads: 128 RoIs per image, 25% foreground; MultiScaleRoIAlign 7x7 (box) and 14x14 (mask),
    adaptive sampling, canonical box 56 at P4; TwoMLPHead 256; MaskRCNNHeads 4 convs at the FPN
    width, 28x28 class-specific masks;
  - images min_size = max_size = the scene side (128): no resizing.
Differences that stay: torchvision's RoIAlign is not `aligned` (half-pixel offset), and its
transform normalises the images inside the model.

With --steps it times that many training steps (after --warmup) at --threads threads and prints
one JSON line: imagesPerSec (batch over the median step), msPerStep, stepsMs, parameters.
Without --steps it serves bench/pytorch_server.ts's protocol: a JSON line with the parameter
count, then for each stdin line `THREADS COUNT` a JSON line with COUNT step times in ms.

Run with Debian's /usr/bin/python3 (python3-torch, python3-torchvision); torch is never a runtime
dependency of selfsup.
"""
import argparse
import json
import os
import sys
import time
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_step import ResNet, serve_stepper  # noqa: E402  (same folder: the engine bench's torchvision-style ResNet)

from torchvision.models.detection import MaskRCNN  # noqa: E402
from torchvision.models.detection.anchor_utils import AnchorGenerator  # noqa: E402
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead  # noqa: E402
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor  # noqa: E402
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign  # noqa: E402

# The shape of defaultMaskRcnnSettings (src/detect/mask_rcnn.ts) for 128 px scenes; bench/transfer.ts
# passes the same keys from the TypeScript settings with --spec.
DEFAULT_SPEC = {
    "width": 16,
    "stem": "imagenet",
    "size": 128,
    "numClasses": 18,  # scene categories; torchvision adds the background class
    "fpnChannels": 32,
    "anchorSizes": [16, 32, 64, 128],
    "aspectRatios": [0.5, 1, 2],
    "rpnBatchPerImage": 256,
    "rpnPositiveFraction": 0.5,
    "rpnNmsThreshold": 0.7,
    "preNmsTopK": {"train": 1000, "test": 1000},
    "postNmsTopK": {"train": 500, "test": 300},
    "roiBatchPerImage": 128,
    "roiPositiveFraction": 0.25,
    "canonicalBox": 56,
    "boxPool": 7,
    "maskPool": 14,
    "fcDim": 256,
    "minObjects": 1,
    "maxObjects": 4,
}


class ResNetBody(nn.Module):
    """res2..res5 of the ResNet as the FPN's inputs '0'..'3' (the classifier dropped)."""

    def __init__(self, width, stem):
        super().__init__()
        net = ResNet(18, stem, width, 3, 1)
        self.conv1, self.bn1, self.maxpool = net.conv1, net.bn1, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.channels = [width, 2 * width, 4 * width, 8 * width]

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        out = OrderedDict()
        for i, layer in enumerate([self.layer1, self.layer2, self.layer3, self.layer4]):
            x = layer(x)
            out[str(i)] = x
        return out


class BodyWithFPN(nn.Module):
    """torchvision's BackboneWithFPN without its default LastLevelMaxPool: P2-P5 only."""

    def __init__(self, body, channels):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(body.channels, channels, extra_blocks=None, norm_layer=nn.BatchNorm2d)
        self.out_channels = channels

    def forward(self, x):
        return self.fpn(self.body(x))


def build(spec):
    c = spec["fpnChannels"]
    levels = ["0", "1", "2", "3"]
    backbone = BodyWithFPN(ResNetBody(spec["width"], spec["stem"]), c)
    anchors = AnchorGenerator(
        sizes=tuple((s,) for s in spec["anchorSizes"]),
        aspect_ratios=(tuple(float(r) for r in spec["aspectRatios"]),) * len(spec["anchorSizes"]),
    )
    box_pool = MultiScaleRoIAlign(levels, spec["boxPool"], 0, canonical_scale=spec["canonicalBox"], canonical_level=4)
    mask_pool = MultiScaleRoIAlign(levels, spec["maskPool"], 0, canonical_scale=spec["canonicalBox"], canonical_level=4)
    classes = spec["numClasses"] + 1
    model = MaskRCNN(
        backbone,
        num_classes=None,
        min_size=spec["size"],
        max_size=spec["size"],
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=spec["preNmsTopK"]["train"],
        rpn_pre_nms_top_n_test=spec["preNmsTopK"]["test"],
        rpn_post_nms_top_n_train=spec["postNmsTopK"]["train"],
        rpn_post_nms_top_n_test=spec["postNmsTopK"]["test"],
        rpn_nms_thresh=spec["rpnNmsThreshold"],
        rpn_batch_size_per_image=spec["rpnBatchPerImage"],
        rpn_positive_fraction=spec["rpnPositiveFraction"],
        box_roi_pool=box_pool,
        box_head=TwoMLPHead(c * spec["boxPool"] ** 2, spec["fcDim"]),
        box_predictor=FastRCNNPredictor(spec["fcDim"], classes),
        box_batch_size_per_image=spec["roiBatchPerImage"],
        box_positive_fraction=spec["roiPositiveFraction"],
        mask_roi_pool=mask_pool,
        mask_head=MaskRCNNHeads(c, (c, c, c, c), 1),
        mask_predictor=MaskRCNNPredictor(c, c, classes),
    )
    return model


def random_targets(spec, batch, generator):
    """1-4 objects per image: random ellipses inside boxes of 20-80 px, as masks and their boxes."""
    size = spec["size"]
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    targets = []
    for _ in range(batch):
        n = int(torch.randint(spec["minObjects"], spec["maxObjects"] + 1, (1,), generator=generator))
        boxes, masks = [], []
        for _ in range(n):
            w, h = (torch.randint(20, 81, (2,), generator=generator).float()).tolist()
            x0 = float(torch.randint(0, size - int(w) + 1, (1,), generator=generator))
            y0 = float(torch.randint(0, size - int(h) + 1, (1,), generator=generator))
            cx, cy = x0 + w / 2, y0 + h / 2
            mask = (((xs + 0.5 - cx) / (w / 2)) ** 2 + ((ys + 0.5 - cy) / (h / 2)) ** 2 <= 1).to(torch.uint8)
            yy, xx = torch.nonzero(mask, as_tuple=True)
            boxes.append([float(xx.min()), float(yy.min()), float(xx.max()) + 1, float(yy.max()) + 1])
            masks.append(mask)
        targets.append({
            "boxes": torch.tensor(boxes, dtype=torch.float32),
            "labels": torch.randint(1, spec["numClasses"] + 1, (n,), generator=generator),
            "masks": torch.stack(masks),
        })
    return targets


class Stepper:
    """The model, SGD (momentum 0.9, weight decay 1e-4, as the fine-tune) and a fixed batch; `step()` times one step."""

    def __init__(self, spec, batch):
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        self.model = build(spec).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        self.images = list(torch.rand(batch, 3, spec["size"], spec["size"], generator=generator))
        self.targets = random_targets(spec, batch, generator)
        self.parameters = sum(p.numel() for p in self.model.parameters())

    def step(self):
        start = time.perf_counter()
        self.opt.zero_grad(set_to_none=True)
        losses = self.model(self.images, self.targets)
        loss = sum(losses.values())
        loss.backward()
        self.opt.step()
        loss.item()  # the step is finished when its loss is read
        return (time.perf_counter() - start) * 1000


def median(xs):
    s = sorted(xs)
    m = len(s) // 2
    return s[m] if len(s) % 2 else (s[m - 1] + s[m]) / 2


def serve(spec, batch):
    serve_stepper(Stepper(spec, batch))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="{}", help="shape as JSON; keys missing take DEFAULT_SPEC's values")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, help="time this many steps and print the result (else serve)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    spec = {**DEFAULT_SPEC, **json.loads(args.spec)}
    if args.steps is None:
        serve(spec, args.batch)
        return
    torch.set_num_threads(args.threads)
    stepper = Stepper(spec, args.batch)
    for _ in range(args.warmup):
        stepper.step()
    steps = [stepper.step() for _ in range(args.steps)]
    ms = median(steps)
    print(json.dumps({
        "torch": torch.__version__,
        "torchvision": __import__("torchvision").__version__,
        "threads": args.threads,
        "batch": args.batch,
        "parameters": stepper.parameters,
        "msPerStep": ms,
        "imagesPerSec": args.batch * 1000 / ms,
        "stepsMs": steps,
    }))


if __name__ == "__main__":
    main()
