"""PyTorch CPU reference for the method-step benchmark (`npm run bench -- --methods`, bench/method_steps.ts):
one training step of each selfsup method written in PyTorch, with the same
shapes and work per step as src/methods/*.ts: the same heads (layer widths, BN
placement, biases), queues and memory banks (lengths, widths), momentum
encoders with shuffle-BN, views and patches per sample and losses, fed with
fixed random tensors of the batch's shapes (the step, not the data pipeline).
The step is the trainer's: zero the gradients, the loss, backward, momentum
SGD (weight decay off BN and biases, as src/train/optimizers.ts), then the
method's after-step work (EMA updates, queue and bank commits).

The TypeScript side sends the method's resolved options and the exact input
shapes (--spec); this script serves steps as bench/pytorch_step.py does (its
serve() protocol: a JSON line with the parameter count, then `THREADS COUNT`
per request). By hand:
  echo "2 3" | /usr/bin/python3 bench/pytorch_methods.py --spec "$(cat spec.json)" --batch 256

Run with Debian's /usr/bin/python3 (python3-torch); torch is never a runtime
dependency of selfsup. The ResNet is pytorch_step.py's.
"""
import argparse
import contextlib
import copy
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from pytorch_step import ResNet, serve_stepper

STAGES = ["res2", "res3", "res4", "res5"]
STAGE_WEIGHTS = {"res2": 0.1, "res3": 0.4, "res4": 0.7, "res5": 1.0}
PATCHES = 9


# ---------------------------------------------------------------- parts


class SplitBatchNorm(nn.BatchNorm2d):
    """BN over `num_splits` groups of the batch (the MoCo CIFAR colab's), as src/methods/parts/split_bn.ts."""

    num_splits = 1

    def forward(self, x):
        g = self.num_splits
        if not self.training or g == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        mean = self.running_mean.repeat(g)
        var = self.running_var.repeat(g)
        out = F.batch_norm(x.reshape(-1, c * g, h, w), mean, var, self.weight.repeat(g), self.bias.repeat(g), True, self.momentum, self.eps)
        with torch.no_grad():
            self.running_mean.copy_(mean.view(g, c).mean(0))
            self.running_var.copy_(var.view(g, c).mean(0))
        return out.view(n, c, h, w)


def backbone(spec, splits=1):
    """pytorch_step.py's ResNet-18, CIFAR stem, without its classifier; every BN split over `splits` groups."""
    net = ResNet(18, "cifar", spec["width"], spec["channels"], 1)
    del net.fc
    if splits > 1:
        for m in net.modules():
            if type(m) is nn.BatchNorm2d:
                m.__class__ = SplitBatchNorm
                m.num_splits = splits
    return net


def stage_maps(net, x):
    x = net.maxpool(F.relu(net.bn1(net.conv1(x))))
    r2 = net.layer1(x)
    r3 = net.layer2(r2)
    r4 = net.layer3(r3)
    r5 = net.layer4(r4)
    return {"res2": r2, "res3": r3, "res4": r4, "res5": r5}


def pool(x):
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def features(net, x):
    return pool(stage_maps(net, x)["res5"])


def feature_dim(spec):
    return spec["width"] * 8


def stage_channels(spec):
    w = spec["width"]
    return {"res2": w, "res3": 2 * w, "res4": 4 * w, "res5": 8 * w}


def mlp(dims, bn=False, last_bn=False):
    """src/nn/layers.ts MLP: Linear -> [BN] -> ReLU, repeated, then a last Linear [-> BN]; a Linear before a BN has no bias."""
    layers = []
    for i in range(len(dims) - 1):
        hidden = i + 2 < len(dims)
        with_bn = bn if hidden else last_bn
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=not with_bn))
        if with_bn:
            layers.append(nn.BatchNorm1d(dims[i + 1]))
        if hidden:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def projection_head(d_in, hidden, d_out, layers=2, bn=False, last_bn=False):
    return mlp([d_in] + [hidden] * (layers - 1) + [d_out], bn, last_bn)


@contextlib.contextmanager
def frozen_stats(module):
    """withRunningStatsFrozen: a pass that leaves the BN running statistics alone."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, s in zip(bns, saved):
            m.momentum = s


class Ema:
    """EmaPair: a frozen twin of `online`; weights averaged, buffers (BN statistics) copied."""

    def __init__(self, online):
        self.target = copy.deepcopy(online)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.params = list(zip(online.parameters(), self.target.parameters()))
        self.buffers = list(zip(online.buffers(), self.target.buffers()))

    @torch.no_grad()
    def update(self, m):
        for o, t in self.params:
            t.mul_(m).add_(o, alpha=1 - m)
        for o, t in self.buffers:
            t.copy_(o)


class Queue(nn.Module):
    """KeyQueue: [K, D] unit keys, written at a pointer after the step."""

    def __init__(self, length, dim):
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(length, dim), dim=1))
        self.ptr = 0
        self.staged = None

    def stage(self, k):
        self.staged = k.detach()

    @torch.no_grad()
    def commit(self):
        k, self.staged = self.staged, None
        if k is None:
            return
        n, big_k = k.shape[0], self.keys.shape[0]
        kept = min(n, big_k)
        start = (self.ptr + n - kept) % big_k
        rows = (start + torch.arange(kept)) % big_k
        self.keys.index_copy_(0, rows, k[n - kept:])
        self.ptr = (start + kept) % big_k


class MemoryBank(nn.Module):
    """MemoryBank: one unit row per training image; eq. 7 blend after the step."""

    def __init__(self, size, dim, momentum):
        super().__init__()
        self.register_buffer("bank", F.normalize(torch.randn(size, dim), dim=1))
        self.momentum = momentum
        self.staged = None

    def get(self, idx):
        return self.bank.index_select(0, idx)

    def sample(self, count):
        return self.get(torch.randint(0, self.bank.shape[0], (count,)))

    def stage(self, idx, v):
        self.staged = (idx, v.detach())

    @torch.no_grad()
    def commit(self):
        (idx, v), self.staged = self.staged, None
        m = self.momentum
        blended = F.normalize(self.get(idx) * m + F.normalize(v, dim=1) * (1 - m), dim=1)
        self.bank.index_copy_(0, idx, blended)


def info_nce(q, k, negatives, t):
    """src/losses/info_nce.ts: (1+K)-way softmax cross-entropy, the positive first."""
    pos = (q * k).sum(1, keepdim=True) / t
    logits = torch.cat([pos, q @ negatives.t() / t], 1)
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))


def shuffled(x, encode):
    """shuffledForward: encode(x[perm])[inverse], the key side of shuffle-BN."""
    perm = torch.randperm(x.shape[0])
    return encode(x[perm])[torch.argsort(perm)]


def neg_cosine(p, z):
    return (2 - 2 * (F.normalize(p, dim=1) * F.normalize(z.detach(), dim=1)).sum(1)).mean()


# ---------------------------------------------------------------- methods


class MethodStep(nn.Module):
    def before_step(self):
        pass

    def after_step(self, step):
        pass


class Supervised(MethodStep):
    def __init__(self, spec, o):
        super().__init__()
        self.backbone = backbone(spec)
        self.classifier = nn.Linear(feature_dim(spec), spec["numClasses"])

    def loss(self, b, step):
        return F.cross_entropy(self.classifier(features(self.backbone, b["view"])), b["labels"])


class MoCo(MethodStep):
    def __init__(self, spec, o, version):
        super().__init__()
        d = feature_dim(spec)
        self.t, self.m = o["temperature"], o["momentum"]
        self.backbone = backbone(spec, o["bnSplits"])
        self.head = projection_head(d, d, o["dim"], layers=1 if version == "v1" else 2)
        self.ema = [Ema(self.backbone), Ema(self.head)]
        self.key_backbone, self.key_head = self.ema[0].target, self.ema[1].target
        self.queue = Queue(o["queueLength"], o["dim"])

    def loss(self, b, step):
        q = F.normalize(self.head(features(self.backbone, b["view1"])), dim=1)
        with torch.no_grad():
            k = shuffled(b["view2"], lambda x: F.normalize(self.key_head(features(self.key_backbone, x)), dim=1))
        self.queue.stage(k)
        return info_nce(q, k, self.queue.keys, self.t)

    def after_step(self, step):
        for e in self.ema:
            e.update(self.m)
        self.queue.commit()


class DenseCL(MoCo):
    def __init__(self, spec, o):
        super().__init__(spec, o, "v2")
        d = feature_dim(spec)
        self.dense_weight = o["denseWeight"]
        self.dense_head = projection_head(d, d, o["dim"], layers=2)
        self.dense_ema = Ema(self.dense_head)
        self.key_dense_head = self.dense_ema.target
        self.dense_queue = Queue(o["queueLength"], o["dim"])

    @staticmethod
    def positions(m):
        return m.flatten(2).transpose(1, 2)  # [B, S, C]

    def dense(self, head, m):
        rows = self.positions(m)
        b, s, c = rows.shape
        return F.normalize(head(rows.reshape(b * s, c)).reshape(b, s, -1), dim=2)

    def loss(self, b, step):
        q_map = stage_maps(self.backbone, b["view1"])["res5"]
        q = F.normalize(self.head(pool(q_map)), dim=1)
        q_dense = self.dense(self.dense_head, q_map)
        with torch.no_grad():
            k_map = shuffled(b["view2"], lambda x: stage_maps(self.key_backbone, x)["res5"])
            k = F.normalize(self.key_head(pool(k_map)), dim=1)
            k_dense = self.dense(self.key_dense_head, k_map)
        self.queue.stage(k)
        self.dense_queue.stage(F.normalize(k_dense.mean(1), dim=1))
        glob = info_nce(q, k, self.queue.keys, self.t)
        with torch.no_grad():
            sim = F.normalize(self.positions(q_map), dim=2) @ F.normalize(self.positions(k_map), dim=2).transpose(1, 2)
            match = sim.argmax(2)  # [B, S]
        bsz, s, d = q_dense.shape
        positives = torch.gather(k_dense, 1, match.unsqueeze(-1).expand(-1, -1, d))
        dense = info_nce(q_dense.reshape(bsz * s, d), positives.reshape(bsz * s, d), self.dense_queue.keys, self.t)
        return glob * (1 - self.dense_weight) + dense * self.dense_weight

    def after_step(self, step):
        super().after_step(step)
        self.dense_ema.update(self.m)
        self.dense_queue.commit()


class LocalHead(nn.Module):
    def __init__(self, c, dim, bn):
        super().__init__()
        self.mlp = mlp([PATCHES * c, c, dim], bn=bn)

    def forward(self, pooled):
        n, c = pooled.shape
        return self.mlp(pooled.reshape(n // PATCHES, PATCHES * c))


class DetCoHeads(nn.Module):
    def __init__(self, channels, dim, local_bn):
        super().__init__()
        self.heads = nn.ModuleDict({
            "global": nn.ModuleDict({s: projection_head(channels[s], channels[s], dim) for s in STAGES}),
            "local": nn.ModuleDict({s: LocalHead(channels[s], dim, local_bn) for s in STAGES}),
        })

    def head(self, kind, s):
        return self.heads[kind][s]


class DetCo(MethodStep):
    def __init__(self, spec, o):
        super().__init__()
        self.o = o
        self.t = o["temperature"]
        self.stages = STAGES if o["hic"] else ["res5"]
        self.weights = STAGE_WEIGHTS if o["hic"] else {**STAGE_WEIGHTS, "res5": 1.0}
        self.channels = stage_channels(spec)
        self.backbone = backbone(spec, o["bnSplits"])
        self.heads = DetCoHeads(self.channels, o["dim"], o.get("localBatchNorm", False))
        self.ema = [Ema(self.backbone), Ema(self.heads)]
        self.key_backbone, self.key_heads = self.ema[0].target, self.ema[1].target
        self.global_queues = nn.ModuleDict({s: Queue(o["queueLength"], o["dim"]) for s in self.stages})
        self.local_queues = nn.ModuleDict({s: Queue(o["queueLength"], o["dim"]) for s in self.stages} if o["cglc"] else {})

    def pooled(self, net, x):
        maps = stage_maps(net, x)
        return {s: pool(maps[s]) for s in self.stages}

    def queries(self, x, kind):
        if kind == "local":
            with frozen_stats(self.backbone):
                f = self.pooled(self.backbone, x)
        else:
            f = self.pooled(self.backbone, x)
        return {s: F.normalize(self.heads.head(kind, s)(f[s]), dim=1) for s in self.stages}

    def keys(self, x, kind):
        with torch.no_grad():
            allp = shuffled(x, lambda xs: torch.cat(list(self.pooled(self.key_backbone, xs).values()), 1))
            parts = torch.split(allp, [self.channels[s] for s in self.stages], 1)
            return {s: F.normalize(self.key_heads.head(kind, s)(parts[i]), dim=1) for i, s in enumerate(self.stages)}

    def loss(self, b, step):
        cglc = self.o["cglc"]
        q_global = self.queries(b["view1"], "global")
        k_global = self.keys(b["view2"], "global")
        q_local = self.queries(b["jigsaw1"], "local") if cglc else None
        k_local = self.keys(b["jigsaw2"], "local") if cglc else None
        total = 0
        for s in self.stages:
            gq = self.global_queues[s]
            terms = [info_nce(q_global[s], k_global[s], gq.keys, self.t)]
            gq.stage(k_global[s])
            if cglc:
                lq = self.local_queues[s]
                terms.append(info_nce(q_local[s], k_local[s], lq.keys, self.t))
                terms.append(info_nce(q_local[s], k_global[s], gq.keys, self.t))
                lq.stage(k_local[s])
            total = total + sum(terms) * self.weights[s]
        return total

    def after_step(self, step):
        for e in self.ema:
            e.update(self.o["momentum"])
        for q in list(self.global_queues.values()) + list(self.local_queues.values()):
            q.commit()


class InsDis(MethodStep):
    def __init__(self, spec, o):
        super().__init__()
        self.o = o
        self.backbone = backbone(spec)
        self.head = projection_head(feature_dim(spec), 0, o["dim"], layers=1, last_bn=o["headBatchNorm"])
        self.memory = MemoryBank(o["bankSize"], o["dim"], o["bankMomentum"])

    def loss(self, b, step):
        v = F.normalize(self.head(features(self.backbone, b["view"])), dim=1)
        positive = self.memory.get(b["indices"])
        negatives = self.memory.sample(self.o["negatives"])
        loss = info_nce(v, positive, negatives, self.o["temperature"])
        self.memory.stage(b["indices"], v)
        return loss

    def after_step(self, step):
        self.memory.commit()


class PIRL(MethodStep):
    def __init__(self, spec, o):
        super().__init__()
        self.o = o
        d, dim = feature_dim(spec), o["dim"]
        self.backbone = backbone(spec)
        self.image_head = projection_head(d, 0, dim, layers=1, last_bn=o["headBatchNorm"])
        self.patch_head = nn.Linear(d, dim)
        self.jigsaw_head = projection_head(PATCHES * dim, 0, dim, layers=1, last_bn=o["headBatchNorm"])
        self.memory = MemoryBank(o["bankSize"], dim, o["bankMomentum"])

    def loss(self, b, step):
        o = self.o
        image = F.normalize(self.image_head(features(self.backbone, b["view"])), dim=1)
        with frozen_stats(self.backbone):
            per_patch = self.patch_head(features(self.backbone, b["jigsaw"]))
        jigsaw = F.normalize(self.jigsaw_head(per_patch.reshape(-1, PATCHES * o["dim"])), dim=1)
        memory = self.memory.get(b["indices"])
        negatives = self.memory.sample(o["negatives"])
        jigsaw_term = info_nce(jigsaw, memory, negatives, o["temperature"])
        image_term = info_nce(image, memory, negatives, o["temperature"])
        self.memory.stage(b["indices"], image)
        return jigsaw_term * o["lambda"] + image_term * (1 - o["lambda"])

    def after_step(self, step):
        self.memory.commit()


class SimCLR(MethodStep):
    def __init__(self, spec, o):
        super().__init__()
        self.t = o["temperature"]
        self.backbone = backbone(spec)
        self.projector = projection_head(feature_dim(spec), o["hiddenDim"], o["outDim"], layers=2, bn=True)

    def loss(self, b, step):
        x = torch.cat([b["view1"], b["view2"]])
        z1, z2 = self.projector(features(self.backbone, x)).chunk(2)
        z = torch.cat([F.normalize(z1, dim=1), F.normalize(z2, dim=1)])
        n2 = z.shape[0]
        logits = z @ z.t() / self.t + torch.eye(n2) * -1e9
        a, bb = z.chunk(2)
        positive = (z * torch.cat([bb, a])).sum(1) / self.t
        return (torch.logsumexp(logits, 1) - positive).mean()


class BYOL(MethodStep):
    def __init__(self, spec, o, total_steps):
        super().__init__()
        self.o, self.total = o, total_steps
        self.backbone = backbone(spec)
        self.projector = projection_head(feature_dim(spec), o["hiddenDim"], o["outDim"], layers=2, bn=True)
        self.predictor = mlp([o["outDim"], o["hiddenDim"], o["outDim"]], bn=True)
        self.ema = [Ema(self.backbone), Ema(self.projector)]
        self.target_backbone, self.target_projector = self.ema[0].target, self.ema[1].target

    def loss(self, b, step):
        x = torch.cat([b["view1"], b["view2"]])
        p1, p2 = self.predictor(self.projector(features(self.backbone, x))).chunk(2)
        with torch.no_grad():
            z1, z2 = self.target_projector(features(self.target_backbone, x)).chunk(2)
        return neg_cosine(p1, z2) + neg_cosine(p2, z1)

    def after_step(self, step):
        t = min(1.0, step / self.total) if self.total > 0 else 1.0
        tau = 1 - (1 - self.o["momentumBase"]) * (math.cos(math.pi * t) + 1) / 2
        for e in self.ema:
            e.update(tau)


class SimSiam(MethodStep):
    def __init__(self, spec, o):
        super().__init__()
        self.backbone = backbone(spec)
        self.projector = projection_head(feature_dim(spec), o["hiddenDim"], o["outDim"], layers=o["projectorLayers"], bn=True, last_bn=True)
        self.predictor = mlp([o["outDim"], o["predictorDim"], o["outDim"]], bn=True)

    def loss(self, b, step):
        x = torch.cat([b["view1"], b["view2"]])
        z = self.projector(features(self.backbone, x))
        p1, p2 = self.predictor(z).chunk(2)
        z1, z2 = z.chunk(2)
        return (neg_cosine(p1, z2) + neg_cosine(p2, z1)) / 4 - 1


class BarlowTwins(MethodStep):
    def __init__(self, spec, o):
        super().__init__()
        self.o = o
        self.backbone = backbone(spec)
        self.projector = projection_head(feature_dim(spec), o["hiddenDim"], o["outDim"], layers=o["projectorLayers"], bn=True)

    @staticmethod
    def standardize(z):
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)

    def loss(self, b, step):
        x = torch.cat([b["view1"], b["view2"]])
        z1, z2 = self.projector(features(self.backbone, x)).chunk(2)
        c = self.standardize(z1).t() @ self.standardize(z2) / z1.shape[0]
        eye = torch.eye(c.shape[0])
        invariance = ((1 - (c * eye).sum(1)) ** 2).sum()
        redundancy = ((c * (1 - eye)) ** 2).sum()
        return (invariance + redundancy * self.o["lambda"]) * self.o["lossScale"]


def sinkhorn(scores, epsilon, iterations):
    """src/losses/sinkhorn.ts, no gradient."""
    with torch.no_grad():
        b, k = scores.shape
        q = torch.exp((scores - scores.max()) / epsilon)
        q = q / q.sum()
        for _ in range(iterations):
            q = q / (q.sum(0, keepdim=True) * k)
            q = q / (q.sum(1, keepdim=True) * b)
        return q * b


def by_crop(x, n):
    """Crop-interleaved rows [B*n, K] -> n crops of [B, K]."""
    rows, k = x.shape
    return list(x.reshape(rows // n, n, k).transpose(0, 1).reshape(rows, k).chunk(n))


class SwAV(MethodStep):
    def __init__(self, spec, o):
        super().__init__()
        if o["queueLength"] > 0:
            raise ValueError("swav: the queue (queueLength > 0) is not mirrored; the default is 0")
        self.o = o
        self.backbone = backbone(spec)
        self.projector = projection_head(feature_dim(spec), o["hiddenDim"], o["outDim"], layers=2, bn=True)
        self.prototypes = nn.Linear(o["outDim"], o["prototypes"], bias=False)

    def before_step(self):
        with torch.no_grad():
            self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def embed(self, x):
        return F.normalize(self.projector(features(self.backbone, x)), dim=1)

    def loss(self, b, step):
        o = self.o
        scores = by_crop(self.prototypes(self.embed(b["global"])), 2)
        if o["localCrops"] > 0:
            with frozen_stats(self.backbone):
                z_local = self.embed(b["local"])
            scores += by_crop(self.prototypes(z_local), o["localCrops"])
        codes = [sinkhorn(s, o["epsilon"], o["sinkhornIterations"]) for s in scores[:2]]
        terms = []
        for i, q in enumerate(codes):
            for v, s in enumerate(scores):
                if v != i:
                    terms.append(-(q * F.log_softmax(s / o["temperature"], dim=1)).sum(1).mean())
        return sum(terms) / len(terms)


class DeepCluster(MethodStep):
    def __init__(self, spec, o):
        super().__init__()
        self.backbone = backbone(spec)
        self.top = nn.Linear(feature_dim(spec), o["clusters"])
        self.register_buffer("pseudo", torch.randint(0, o["clusters"], (spec["datasetSize"],)))

    def loss(self, b, step):
        return F.cross_entropy(self.top(features(self.backbone, b["view"])), self.pseudo[b["indices"]])


class Pretext(MethodStep):
    """PretextMethod: pooled features of a sample's `parts` images, an optional per-image Linear -> BN -> ReLU (partDim), concatenated, an MLP head, cross-entropy."""

    def __init__(self, spec, o, output, parts, classes):
        super().__init__()
        self.output, self.parts = output, parts
        self.backbone = backbone(spec)
        hidden, part = o["hiddenDim"], o.get("partDim", 0)
        self.part = nn.Sequential(mlp([feature_dim(spec), part], last_bn=True), nn.ReLU(inplace=True)) if part > 0 else nn.Identity()
        d = parts * (part if part > 0 else feature_dim(spec))
        self.head = mlp([d, hidden, classes] if hidden > 0 else [d, classes], bn=True)

    def loss(self, b, step):
        per_image = self.part(features(self.backbone, b[self.output]))
        n, c = per_image.shape
        logits = self.head(per_image.reshape(n // self.parts, self.parts * c))
        return F.cross_entropy(logits, b[self.output + ".label"])


def build(spec):
    name, o = spec["method"], spec["options"]
    if name == "supervised":
        return Supervised(spec, o)
    if name in ("mocov1", "mocov2"):
        return MoCo(spec, o, "v1" if name == "mocov1" else "v2")
    if name == "densecl":
        return DenseCL(spec, o)
    if name == "detco":
        return DetCo(spec, o)
    if name == "insdis":
        return InsDis(spec, o)
    if name == "pirl":
        return PIRL(spec, o)
    if name == "simclr":
        return SimCLR(spec, o)
    if name == "byol":
        return BYOL(spec, o, spec["totalSteps"])
    if name == "simsiam":
        return SimSiam(spec, o)
    if name == "barlow":
        return BarlowTwins(spec, o)
    if name == "swav":
        return SwAV(spec, o)
    if name == "deepcluster":
        return DeepCluster(spec, o)
    if name == "rotation":
        return Pretext(spec, o, "rotation", 1, 4)
    if name == "jigsaw":
        return Pretext(spec, o, "jigsaw", PATCHES, o["permutations"])
    if name == "relloc":
        return Pretext(spec, o, "relloc", 2, 8)
    raise ValueError(f"unknown method {name}")


def random_batch(spec):
    """Fixed random inputs of the TypeScript batch's shapes (NCHW), valid labels, distinct dataset indices."""
    b = {name: torch.randn(*shape) for name, shape in spec["inputs"].items()}
    for name, lab in spec["labels"].items():
        b[name] = torch.arange(lab["size"]) % lab["classes"]
    n = spec["batch"]
    b["indices"] = torch.randperm(spec["datasetSize"])[:n]
    b["labels"] = torch.arange(n) % spec["numClasses"]
    return b


class Stepper:
    """One method, its optimizer and a fixed batch; `step()` times one training step in ms."""

    def __init__(self, spec):
        torch.manual_seed(0)
        self.method = build(spec).train()
        params = [p for p in self.method.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        self.opt = torch.optim.SGD(
            [{"params": decay, "weight_decay": spec["weightDecay"]}, {"params": no_decay, "weight_decay": 0.0}],
            lr=spec["lr"],
            momentum=spec["momentum"],
        )
        self.batch = random_batch(spec)
        self.parameters = sum(p.numel() for p in params)
        self.step_no = spec["firstStep"]

    def step(self):
        start = time.perf_counter()
        self.method.before_step()
        self.opt.zero_grad(set_to_none=True)
        loss = self.method.loss(self.batch, self.step_no)
        loss.backward()
        value = loss.item()  # the trainer reads the loss before the update
        if not math.isfinite(value):
            raise FloatingPointError(f"loss {value}")
        self.opt.step()
        self.method.after_step(self.step_no)
        self.step_no += 1
        return (time.perf_counter() - start) * 1000


def serve(spec):
    serve_stepper(Stepper(spec))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", required=True, help="the method spec as JSON (bench/method_steps.ts PytorchMethodSpec)")
    ap.add_argument("--batch", type=int, required=True)
    args = ap.parse_args()
    spec = json.loads(args.spec)
    if spec["batch"] != args.batch:
        raise SystemExit(f"--batch {args.batch} differs from the spec's {spec['batch']}")
    serve(spec)


if __name__ == "__main__":
    main()
