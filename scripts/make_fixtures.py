#!/usr/bin/env python3
"""Writes the PyTorch golden fixtures in fixtures/ (committed; CI never runs this).

    /opt/torch/bin/python scripts/make_fixtures.py          # any Python with torch + torchvision
    /opt/torch/bin/python scripts/make_fixtures.py preact   # only the pre-activation files
    /opt/torch/bin/python scripts/make_fixtures.py weights  # only weights_only.safetensors (needs npm run build)

Everything is seeded, so a re-run writes the same values (up to the PyTorch version). Files:

- ops.safetensors: per op case `<case>.<tensor>`: inputs, outputs and the gradients of
  loss = sum(out * r) for the random `<case>.r` stored with them (cross-entropy: of the loss
  itself). The metadata key `cases` lists each case's op and settings as JSON.
- resnet20_init.safetensors: a plain state dict (torchvision names) of the CIFAR ResNet-20,
  option A, 3 channels, 10 classes: the weights both sides start from.
- resnet20_step.safetensors: one SGD step (lr 0.1, momentum 0.9, weight decay 1e-4) of that
  net, training mode, on a fixed batch: `input`, `labels`, `loss`, `logits`, `grad.<param>`,
  `after.<param or buffer>` (parameters, running statistics and num_batches_tracked).
- imagenet_logits.safetensors: torchvision ResNet-18 and ResNet-50 (eval mode) on `input`
  (2x3x64x64): `resnet18.logits`, `resnet50.logits`. Their weights are not stored (47 MB and
  100 MB): every tensor is made by `hash_init` below, which the Rust and TypeScript tests
  reimplement bit for bit; the metadata `resnet18.names` / `resnet50.names` lists the state
  dict's names, shapes and dtypes in order.

- preresnet8_cifar.safetensors, preresnet_bottleneck.safetensors: pre-activation nets (He et al.
  2016, the layout of crates/resnet-core/src/nn/blocks.rs): a CIFAR PreResNet-8 (option A, 3
  channels, 10 classes) and a small bottleneck net with an ImageNet stem (option B, stride in the
  3x3). Weights by `hash_init` (not stored); metadata `spec` (the resnet-wgpu spec JSON) and `names`
  (the state dict's names, shapes and dtypes in order). Tensors: `input`, `labels`, `eval.logits`
  (eval mode, before the step), then one SGD step (lr 0.1, momentum 0.9, weight decay 1e-4) in
  training mode: `loss`, `logits`, `grad.<param>`, `after.<param or buffer>`.
  Written only by `make_fixtures.py preact` (or with no argument, which rewrites every file).

- weights_only.safetensors: `Model.exportWeights` read by PyTorch. For a torchvision ResNet-18 and
  the CIFAR ResNet-20 above (option A), node (the built package, `./dist/index.js`; run `npm run
  build` first) creates the model with a fixed seed, loads `hash_init` weights into it and
  exports them weights-only; PyTorch then loads that file with `safetensors.torch.load_file` and
  `load_state_dict(..., strict=True)` (names, shapes and dtypes checked too) and runs it in eval
  mode. Stored: `<arch>.input` (seeded), `<arch>.logits` (PyTorch's); metadata `<arch>.sha256`
  and `<arch>.bytes` of the exported file PyTorch loaded, `<arch>.spec`, `<arch>.factory` (the
  TypeScript call that made the spec), `<arch>.seed` (Model.create's), `<arch>.input_seed` and
  `<arch>.names`. The exported files themselves (45 MB for ResNet-18) are not kept. Written only
  by `make_fixtures.py weights` (or with no argument); `NODE` names the node binary (default
  `node`).

The safetensors files are written by the small writer below (same format as the `safetensors`
package: 8-byte little-endian header length, JSON header, raw little-endian data).
"""

import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "fixtures")

torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


# --- safetensors writer -------------------------------------------------------------------------

def save_safetensors(path, tensors, metadata=None):
    """tensors: dict name -> torch tensor (float32 or int64), written in insertion order."""
    header = {}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        if t.dtype == torch.float32:
            dtype = "F32"
        elif t.dtype == torch.int64:
            dtype = "I64"
        else:
            raise ValueError(f"{name}: unsupported dtype {t.dtype}")
        data = t.numpy().tobytes()  # little-endian on every platform we run this on
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path):,} bytes, {len(tensors)} tensors)")


# --- hash_init: deterministic weights reproducible in any language -------------------------------

M32 = 0xFFFFFFFF


def _mul32(x, m):
    """(x * m) mod 2^32 for an int64 tensor x in [0, 2^32) without overflowing int64."""
    lo = (x * (m & 0xFFFF)) & M32
    hi = ((x * (m >> 16)) & 0xFFFF) << 16
    return (lo + hi) & M32


def _lowbias32(x):
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    x = x ^ (x >> 16)
    return x


def fnv1a32(s):
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & M32
    return h


def hash_uniform(name, n):
    """n float32 values in [-1, 1): element i is lowbias32((i * 0x9E3779B1 + fnv1a32(name)) mod 2^32)
    >> 8, divided by 2^23, minus 1 (all exact in float32)."""
    i = torch.arange(n, dtype=torch.int64)
    x = (_mul32(i, 0x9E3779B1) + fnv1a32(name)) & M32
    h = _lowbias32(x) >> 8
    return h.to(torch.float32) / 8388608.0 - 1.0


def hash_init_spec(name, shape):
    """(scale, offset): the tensor is float32(float32(u * scale) + offset). scale is float32(sqrt(v))
    for a float64 v; every operation is a correctly rounded float32 operation."""
    fan_in = 1
    for d in shape[1:]:
        fan_in *= d
    if name.endswith("num_batches_tracked"):
        return None
    if name.endswith("running_var"):
        return 0.25, 1.0
    if name.endswith("running_mean") or name.endswith(".bias"):
        return 0.125, 0.0
    if len(shape) == 1:  # batch-norm weight
        return 0.25, 1.0
    if name.startswith("fc."):
        return math.sqrt(1.0 / fan_in), 0.0
    # Convolutions: uniform with the variance of Kaiming's N(0, 2/fan_in).
    return math.sqrt(6.0 / fan_in), 0.0


def hash_init(name, shape):
    spec = hash_init_spec(name, shape)
    if spec is None:
        return torch.tensor(7, dtype=torch.int64)
    scale, offset = spec
    n = 1
    for d in shape:
        n *= d
    u = hash_uniform(name, n)
    s = torch.tensor(scale, dtype=torch.float32)
    o = torch.tensor(offset, dtype=torch.float32)
    return ((u * s) + o).reshape(shape)


# --- ops ----------------------------------------------------------------------------------------

def rand(g, *shape):
    return torch.randn(*shape, generator=g, dtype=torch.float32)


def grads_of(out, leaves, r):
    for t in leaves:
        t.grad = None
    (out * r).sum().backward()
    return [t.grad.clone() for t in leaves]


def make_ops():
    g = torch.Generator().manual_seed(1234)
    tensors = {}
    cases = []

    def put(case, **kw):
        for k, v in kw.items():
            tensors[f"{case}.{k}"] = v.detach().clone()

    conv_cases = [
        # name, n, c_in, c_out, h, w, kernel, stride, padding, bias
        ("conv_3x3_s1_p1", 2, 3, 4, 9, 9, 3, 1, 1, False),
        ("conv_3x3_s2_p1", 2, 4, 6, 9, 9, 3, 2, 1, False),
        ("conv_3x3_s1_p0_rect", 2, 3, 5, 8, 11, 3, 1, 0, False),
        ("conv_1x1_s1_p0", 3, 6, 4, 5, 5, 1, 1, 0, False),
        ("conv_1x1_s2_p0", 2, 8, 16, 7, 7, 1, 2, 0, False),
        ("conv_7x7_s2_p3", 2, 3, 8, 16, 16, 7, 2, 3, False),
        ("conv_5x5_s1_p2_bias", 2, 2, 3, 6, 6, 5, 1, 2, True),
        ("conv_3x3_s3_p2_bias", 1, 3, 4, 10, 10, 3, 3, 2, True),
    ]
    for name, n, ci, co, h, w, k, s, p, bias in conv_cases:
        x = rand(g, n, ci, h, w).requires_grad_()
        wt = (rand(g, co, ci, k, k) * math.sqrt(2.0 / (ci * k * k))).requires_grad_()
        b = rand(g, co).requires_grad_() if bias else None
        y = F.conv2d(x, wt, b, stride=s, padding=p)
        r = rand(g, *y.shape)
        leaves = [x, wt] + ([b] if bias else [])
        gs = grads_of(y, leaves, r)
        put(name, x=x, w=wt, y=y, r=r, dx=gs[0], dw=gs[1])
        if bias:
            put(name, b=b, db=gs[2])
        cases.append({"name": name, "op": "conv2d", "stride": s, "padding": p, "bias": bias})

    for name, training, shape in [("bn_train", True, (4, 3, 5, 5)), ("bn_eval", False, (3, 4, 6, 5)),
                                  ("bn_train_1x1", True, (16, 5, 1, 1))]:
        c = shape[1]
        x = (rand(g, *shape) * 2.0 + 0.5).requires_grad_()
        gamma = (1.0 + 0.3 * rand(g, c)).requires_grad_()
        beta = (0.2 * rand(g, c)).requires_grad_()
        rm = 0.1 * rand(g, c)
        rv = 1.0 + 0.3 * torch.rand(c, generator=g)
        put(name, running_mean=rm, running_var=rv)
        rm2, rv2 = rm.clone(), rv.clone()
        y = F.batch_norm(x, rm2, rv2, gamma, beta, training=training, momentum=0.1, eps=1e-5)
        r = rand(g, *y.shape)
        dx, dgamma, dbeta = grads_of(y, [x, gamma, beta], r)
        put(name, x=x, gamma=gamma, beta=beta, y=y, r=r, dx=dx, dgamma=dgamma, dbeta=dbeta,
            running_mean_after=rm2, running_var_after=rv2)
        cases.append({"name": name, "op": "batch_norm2d", "training": training, "momentum": 0.1, "eps": 1e-5})

    for name, shape, k, s, p in [("maxpool_3x3_s2_p1", (2, 3, 9, 9), 3, 2, 1),
                                 ("maxpool_2x2_s2_p0", (2, 2, 8, 8), 2, 2, 0),
                                 ("maxpool_3x3_s1_p1", (1, 2, 5, 7), 3, 1, 1)]:
        x = rand(g, *shape).requires_grad_()
        y = F.max_pool2d(x, k, s, p)
        r = rand(g, *y.shape)
        (dx,) = grads_of(y, [x], r)
        put(name, x=x, y=y, r=r, dx=dx)
        cases.append({"name": name, "op": "max_pool2d", "kernel": k, "stride": s, "padding": p})

    x = rand(g, 2, 5, 4, 3).requires_grad_()
    y = F.adaptive_avg_pool2d(x, 1).flatten(1)
    r = rand(g, *y.shape)
    (dx,) = grads_of(y, [x], r)
    put("global_avg_pool", x=x, y=y, r=r, dx=dx)
    cases.append({"name": "global_avg_pool", "op": "global_avg_pool"})

    for name, bias in [("linear_bias", True), ("linear_nobias", False)]:
        x = rand(g, 4, 7).requires_grad_()
        w = (rand(g, 5, 7) * 0.4).requires_grad_()
        b = rand(g, 5).requires_grad_() if bias else None
        y = F.linear(x, w, b)
        r = rand(g, *y.shape)
        gs = grads_of(y, [x, w] + ([b] if bias else []), r)
        put(name, x=x, w=w, y=y, r=r, dx=gs[0], dw=gs[1])
        if bias:
            put(name, b=b, db=gs[2])
        cases.append({"name": name, "op": "linear", "bias": bias})

    logits = (rand(g, 6, 10) * 3.0).requires_grad_()
    labels = torch.randint(0, 10, (6,), generator=g, dtype=torch.int64)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    put("cross_entropy", logits=logits, labels=labels, loss=loss.reshape(1), dlogits=logits.grad)
    cases.append({"name": "cross_entropy", "op": "cross_entropy"})

    for name, shape, c_out, stride in [("shortcut_a_s2", (2, 4, 7, 7), 8, 2),
                                       ("shortcut_a_s2_odd", (2, 3, 6, 6), 8, 2),
                                       ("shortcut_a_s1", (1, 2, 3, 4), 5, 1)]:
        x = rand(g, *shape).requires_grad_()
        y = shortcut_a(x, c_out, stride)
        r = rand(g, *y.shape)
        (dx,) = grads_of(y, [x], r)
        put(name, x=x, y=y, r=r, dx=dx)
        cases.append({"name": name, "op": "shortcut_a", "c_out": c_out, "stride": stride})

    save_safetensors(os.path.join(OUT, "ops.safetensors"), tensors, {"cases": json.dumps(cases), "torch": torch.__version__})


def shortcut_a(x, c_out, stride):
    """Option A: subsample, then zero-pad channels, (c_out - c_in) // 2 before and the rest after."""
    c_in = x.shape[1]
    before = (c_out - c_in) // 2
    after = c_out - c_in - before
    return F.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, before, after))


# --- ResNet-20 (CIFAR, option A) with torchvision-style names ------------------------------------

class BasicBlockA(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.c_out = c_out
        self.stride = stride
        self.changes = stride != 1 or c_in != c_out

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = shortcut_a(x, self.c_out, self.stride) if self.changes else x
        return F.relu(y + s)


class CifarResNet(nn.Module):
    def __init__(self, depth=20, in_channels=3, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        c = 16
        for i, (width, stride) in enumerate([(16, 1), (32, 2), (64, 2)]):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlockA(c, width, stride if j == 0 else 1))
                c = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def make_resnet20():
    torch.manual_seed(20)
    net = CifarResNet(20, 3, 10)
    g = torch.Generator().manual_seed(2020)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                # Not 1 / 0 / 0 / 1, so every term of batch norm shows in the fixture.
                m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(1.0 + 0.2 * torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(3)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    save_safetensors(os.path.join(OUT, "resnet20_init.safetensors"), init,
                     {"about": "CIFAR ResNet-20, option A, 3 channels, 10 classes (scripts/make_fixtures.py)"})

    x = torch.randn(8, 3, 16, 16, generator=g)
    labels = torch.randint(0, 10, (8,), generator=g, dtype=torch.int64)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    net.train()
    opt.zero_grad()
    logits = net(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    out = {"input": x, "labels": labels, "loss": loss.detach().reshape(1), "logits": logits.detach()}
    for name, p in net.named_parameters():
        out[f"grad.{name}"] = p.grad.clone()
    opt.step()
    for name, v in net.state_dict().items():
        out[f"after.{name}"] = v.clone()
    save_safetensors(os.path.join(OUT, "resnet20_step.safetensors"), out,
                     {"optimizer": json.dumps({"lr": 0.1, "momentum": 0.9, "weightDecay": 1e-4}),
                      "torch": torch.__version__})


# --- torchvision ResNet-18 / ResNet-50 in eval mode ----------------------------------------------

def make_imagenet():
    g = torch.Generator().manual_seed(1850)
    x = torch.randn(2, 3, 64, 64, generator=g)
    out = {"input": x}
    meta = {"torch": torch.__version__, "torchvision": torchvision.__version__}
    for arch in ["resnet18", "resnet50"]:
        net = getattr(torchvision.models, arch)(weights=None)
        sd = net.state_dict()
        new = {}
        names = []
        for k, v in sd.items():
            t = hash_init(k, list(v.shape))
            assert t.dtype == v.dtype and list(t.shape) == list(v.shape), k
            new[k] = t
            names.append([k, list(v.shape), "I64" if v.dtype == torch.int64 else "F32"])
        net.load_state_dict(new)
        net.eval()
        with torch.no_grad():
            logits = net(x)
        print(f"{arch}: logits std {logits.std().item():.3f}, max |.| {logits.abs().max().item():.3f}")
        out[f"{arch}.logits"] = logits
        meta[f"{arch}.names"] = json.dumps(names, separators=(",", ":"))
        # A spot check of hash_init for the other languages' tests.
        out[f"{arch}.probe.conv1.weight"] = new["conv1.weight"].flatten()[:16].clone()
    save_safetensors(os.path.join(OUT, "imagenet_logits.safetensors"), out, meta)


# --- pre-activation nets (He et al. 2016) -------------------------------------------------------

class PreActBlock(nn.Module):
    """bnK + ReLU before convK (no bn1 when `skip_first_bn`: the first block after an ImageNet
    stem), nothing after the addition; a shortcut that changes the shape takes the pre-activated
    input h = relu(bn1(x)): a bias-free 1x1 convolution `downsample.0` (option B) or option A."""

    def __init__(self, kind, c_in, width, stride, option, skip_first_bn, bottleneck_stride="3x3"):
        super().__init__()
        if kind == "basic":
            layout = [(c_in, width, 3, stride, 1), (width, width, 3, 1, 1)]
        else:
            s1, s3 = (stride, 1) if bottleneck_stride == "1x1" else (1, stride)
            layout = [(c_in, width, 1, s1, 0), (width, width, 3, s3, 1), (width, width * 4, 1, 1, 0)]
        self.k = len(layout)
        for k, (ci, co, ker, s, p) in enumerate(layout, 1):
            if not (k == 1 and skip_first_bn):
                setattr(self, f"bn{k}", nn.BatchNorm2d(ci))
            setattr(self, f"conv{k}", nn.Conv2d(ci, co, ker, s, p, bias=False))
        self.c_out = layout[-1][1]
        self.stride = stride
        self.changes = stride != 1 or c_in != self.c_out
        self.option = option
        if option == "C" or (option == "B" and self.changes):
            self.downsample = nn.Sequential(nn.Conv2d(c_in, self.c_out, 1, stride, 0, bias=False))

    def forward(self, x):
        h = F.relu(self.bn1(x)) if hasattr(self, "bn1") else x
        y = h
        for k in range(1, self.k + 1):
            if k > 1:
                y = F.relu(getattr(self, f"bn{k}")(y))
            y = getattr(self, f"conv{k}")(y)
        if hasattr(self, "downsample"):
            s = self.downsample(h)
        elif self.changes:
            s = shortcut_a(h, self.c_out, self.stride)
        else:
            s = x
        return y + s


class PreActResNet(nn.Module):
    """A resnet-wgpu spec (dict) with preActivation: a bare 3x3 stem (CIFAR) or conv-BN-ReLU-max
    pool (ImageNet), the stages, bn_final + ReLU, global average pool, fc."""

    def __init__(self, spec):
        super().__init__()
        self.imagenet = spec["stem"] == "imagenet"
        w = spec["stemWidth"]
        if self.imagenet:
            self.conv1 = nn.Conv2d(spec["inChannels"], w, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(w)
        else:
            self.conv1 = nn.Conv2d(spec["inChannels"], w, 3, 1, 1, bias=False)
        c = w
        for i, st in enumerate(spec["stages"]):
            blocks = []
            for j in range(st["count"]):
                b = PreActBlock(st["block"], c, st["width"], st["stride"] if j == 0 else 1, spec["shortcut"],
                                self.imagenet and i == 0 and j == 0, spec.get("bottleneckStride", "3x3"))
                blocks.append(b)
                c = b.c_out
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.n_stages = len(spec["stages"])
        self.bn_final = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, spec["numClasses"])

    def forward(self, x):
        x = self.conv1(x)
        if self.imagenet:
            x = F.max_pool2d(F.relu(self.bn1(x)), 3, 2, 1)
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        x = F.relu(self.bn_final(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def make_preact_one(filename, spec, input_shape, seed):
    net = PreActResNet(spec)
    sd = net.state_dict()
    names = []
    new = {}
    for k, v in sd.items():
        t = hash_init(k, list(v.shape))
        assert t.dtype == v.dtype and list(t.shape) == list(v.shape), k
        new[k] = t
        names.append([k, list(v.shape), "I64" if v.dtype == torch.int64 else "F32"])
    net.load_state_dict(new)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*input_shape, generator=g)
    labels = torch.randint(0, spec["numClasses"], (input_shape[0],), generator=g, dtype=torch.int64)
    out = {"input": x, "labels": labels}
    net.eval()
    with torch.no_grad():
        out["eval.logits"] = net(x)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    net.train()
    opt.zero_grad()
    logits = net(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    out["loss"] = loss.detach().reshape(1)
    out["logits"] = logits.detach()
    for name, p in net.named_parameters():
        out[f"grad.{name}"] = p.grad.clone()
    opt.step()
    for name, v in net.state_dict().items():
        out[f"after.{name}"] = v.clone()
    print(f"{filename}: eval logits std {out['eval.logits'].std().item():.3f}, loss {loss.item():.4f}")
    save_safetensors(os.path.join(OUT, filename), out,
                     {"spec": json.dumps(spec, separators=(",", ":")),
                      "names": json.dumps(names, separators=(",", ":")),
                      "optimizer": json.dumps({"lr": 0.1, "momentum": 0.9, "weightDecay": 1e-4}),
                      "torch": torch.__version__})


def make_preact():
    cifar = {
        "stem": "cifar", "stemWidth": 16, "shortcut": "A", "plain": False, "inChannels": 3, "numClasses": 10,
        "stages": [{"block": "basic", "count": 1, "width": w, "stride": s} for w, s in [(16, 1), (32, 2), (64, 2)]],
        "bottleneckStride": "3x3", "activation": "relu", "preActivation": True,
    }
    make_preact_one("preresnet8_cifar.safetensors", cifar, (8, 3, 16, 16), 2016)
    bottleneck = {
        "stem": "imagenet", "stemWidth": 16, "shortcut": "B", "plain": False, "inChannels": 3, "numClasses": 10,
        "stages": [{"block": "bottleneck", "count": 2, "width": 8, "stride": 1},
                   {"block": "bottleneck", "count": 2, "width": 16, "stride": 2}],
        "bottleneckStride": "3x3", "activation": "relu", "preActivation": True,
    }
    make_preact_one("preresnet_bottleneck.safetensors", bottleneck, (4, 3, 32, 32), 2017)


# --- weights-only export (resnet-wgpu) loaded by PyTorch strictly ---------------------------------

EXPORT_JS = """
import { pathToFileURL } from 'node:url';
const [root, factory, seed, src, dst] = process.argv.slice(-5);
const { Model, resnet } = await import(pathToFileURL(`${root}/dist/index.js`).href);
const spec = new Function('resnet', `return ${factory};`)(resnet);
const model = Model.create(spec, { seed: Number(seed), device: 'cpu' });
await model.loadWeights(src);
await model.exportWeights(dst);
console.log(JSON.stringify(model.spec));
model.dispose();
"""


def make_weights_only():
    import hashlib
    import subprocess
    import tempfile
    from safetensors.torch import load_file

    node = os.environ.get("NODE", "node")
    cases = [
        ("resnet18", "resnet.imagenet({ depth: 18 })", lambda: torchvision.models.resnet18(weights=None), (2, 3, 64, 64)),
        ("resnet20", "resnet.cifar({ depth: 20, shortcut: 'A', inChannels: 3, numClasses: 10 })",
         lambda: CifarResNet(20, 3, 10), (4, 3, 16, 16)),
    ]
    out = {}
    meta = {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "weights": "hash_init, loaded into Model.create(spec, { seed }) and exported by Model.exportWeights"}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (arch, factory, make_net, shape) in enumerate(cases):
            net = make_net()
            ref = net.state_dict()
            init = {k: hash_init(k, list(v.shape)) for k, v in ref.items()}
            src = os.path.join(tmp, f"{arch}.init.safetensors")
            dst = os.path.join(tmp, f"{arch}.weights.safetensors")
            save_safetensors(src, init)
            seed = 1000 + i
            r = subprocess.run([node, "--input-type=module", "-e", EXPORT_JS, ROOT, factory, str(seed), src, dst],
                               cwd=ROOT, capture_output=True, text=True)
            if r.returncode != 0:
                raise SystemExit(f"node failed exporting {arch}:\n{r.stdout}{r.stderr}")
            spec = r.stdout.strip().splitlines()[-1]
            with open(dst, "rb") as f:
                data = f.read()

            sd = load_file(dst)
            assert sorted(sd) == sorted(ref), f"{arch}: keys differ: {sorted(set(sd) ^ set(ref))[:8]}"
            for k, v in ref.items():
                assert sd[k].dtype == v.dtype and sd[k].shape == v.shape, (k, sd[k].dtype, sd[k].shape, v.dtype, v.shape)
                assert torch.equal(sd[k], init[k]), f"{arch}: {k} changed on the way through resnet-wgpu"
            net.load_state_dict(sd, strict=True)
            net.eval()
            g = torch.Generator().manual_seed(seed + 1)
            x = torch.randn(*shape, generator=g)
            with torch.no_grad():
                logits = net(x)
            print(f"{arch}: PyTorch loaded the export strictly ({len(data):,} bytes, {len(sd)} tensors); "
                  f"logits std {logits.std().item():.3f}")
            out[f"{arch}.input"] = x
            out[f"{arch}.logits"] = logits
            meta[f"{arch}.sha256"] = hashlib.sha256(data).hexdigest()
            meta[f"{arch}.bytes"] = str(len(data))
            meta[f"{arch}.spec"] = spec
            meta[f"{arch}.factory"] = factory
            meta[f"{arch}.seed"] = str(seed)
            meta[f"{arch}.input_seed"] = str(seed + 1)
            meta[f"{arch}.names"] = json.dumps(
                [[k, list(v.shape), "I64" if v.dtype == torch.int64 else "F32"] for k, v in ref.items()],
                separators=(",", ":"))
    save_safetensors(os.path.join(OUT, "weights_only.safetensors"), out, meta)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    which = sys.argv[1:] or ["ops", "resnet20", "imagenet", "preact", "weights"]
    if "ops" in which:
        make_ops()
    if "resnet20" in which:
        make_resnet20()
    if "imagenet" in which:
        make_imagenet()
    if "preact" in which:
        make_preact()
    if "weights" in which:
        make_weights_only()
