"""PyTorch side of `npm run bench`: the same ResNet on the CPU with a given thread count, timed the
way our bench times ours (median step after warm-up, random data). Prints one JSON line.

Usage: python3 torch_cpu_bench.py THREADS DEPTH BATCH CHANNELS SIZE
           [--net cifar|imagenet] [--steps N] [--warmup N] [--profile N]

--net cifar (default): the anchor's CIFAR ResNet (../shared/anchors/torch_resnet.py, projection
shortcuts). --net imagenet: torchvision's resnetDEPTH with 10 classes (our `resnet.imagenet`,
option B, same classes). The first convolution takes CHANNELS input channels.

Without --profile: training and inference img/s and this process's peak RSS. With --profile N:
N training steps (after warm-up) under torch.profiler (CPU), the self CPU time of every op
grouped into our phases, per step (see `phase_of`)."""
import json, os, resource, sys, time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', '..', 'shared', 'anchors'))
import torch, torch.nn.functional as F  # noqa: E402


def build(net, depth, channels):
    if net == 'cifar':
        from torch_resnet import cifar_resnet
        m = cifar_resnet((depth - 2) // 6)
        m[0] = torch.nn.Conv2d(channels, 16, 3, 1, 1, bias=False)
        return m
    import torchvision
    m = getattr(torchvision.models, f'resnet{depth}')(num_classes=10)
    if channels != 3:
        m.conv1 = torch.nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
    return m


def median_seconds(fn, warm, steps):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def peak_rss_mib():
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / (1024 * 1024) if sys.platform == 'darwin' else kib / 1024  # bytes on macOS


# --- Grouping the profiler's ops into our phases ---------------------------------------------------
#
# Our phases time whole backend calls, allocations of their outputs included; the PyTorch
# equivalent of one call is the op the model's Python code (or an autograd node) calls, with
# everything beneath it. So an op's self time goes to the phase of its OUTERMOST enclosing op or
# autograd node that has one (aten::empty under aten::mkldnn_convolution is conv forward; aten::add_
# under Optimizer.step is optimizer), else to its own name's phase, else to "other". The autograd
# engine's own frames (evaluate_function, the node's own self time, AccumulateGrad) are "other",
# as our autograd bookkeeping is. PyTorch's convolution_backward computes both gradients in one op,
# so its phase is "conv backward" (data + weight together).

NODE_PHASES = {
    'ConvolutionBackward0': 'conv backward',
    'NativeBatchNormBackward0': 'bn backward',
    'ReluBackward0': 'elementwise',
    'AddBackward0': 'elementwise',
    'MaxPool2DWithIndicesBackward0': 'pooling',
    'MeanBackward1': 'pooling',
    'AdaptiveAvgPool2DBackward0': 'pooling',
    'AddmmBackward0': 'linear',
    'MmBackward0': 'linear',
    'TBackward0': 'linear',
    'NllLossBackward0': 'loss',
    'LogSoftmaxBackward0': 'loss',
}

ELEMENTWISE = {'relu', 'relu_', 'clamp_min', 'clamp_min_', 'threshold_backward', 'add', 'add_', 'mul', 'mul_',
               'div', 'div_', 'sub', 'sub_', 'neg', 'tanh', 'sigmoid', 'tanh_backward', 'sigmoid_backward'}
ALLOC = {'empty', 'empty_like', 'empty_strided', 'zeros', 'zeros_like', 'zero_', 'fill_', 'copy_', 'clone',
         'contiguous', '_to_copy', 'to', 'resize_', 'new_empty', 'new_zeros', 'full'}
LINEAR = {'linear', 'addmm', 'mm', 'matmul'}


def op_phase(name):
    """The phase of an op or autograd node by its name alone; None for anything else."""
    if name.startswith('Optimizer.') or '_foreach_' in name or 'fused_sgd' in name:
        return 'optimizer'
    if name in NODE_PHASES:
        return NODE_PHASES[name]
    if not name.startswith('aten::'):
        return None
    op = name[len('aten::'):]
    if 'conv' in op:
        return 'conv backward' if 'backward' in op else 'conv forward'
    if 'batch_norm' in op:
        return 'bn backward' if 'backward' in op else 'bn forward'
    if 'pool' in op:
        return 'pooling'
    if 'cross_entropy' in op or 'log_softmax' in op or 'nll_loss' in op:
        return 'loss'
    if op in LINEAR:
        return 'linear'
    if op in ELEMENTWISE:
        return 'elementwise'
    if op in ALLOC:
        return 'alloc/copy'
    return None


def is_bookkeeping(name):
    return name.startswith('autograd::') or name.startswith('torch::autograd::') or name in NODE_PHASES


def phase_of(event):
    if is_bookkeeping(event.name):
        return 'other'
    chain = []
    e = event
    while e is not None:
        chain.append(e)
        e = e.cpu_parent
    for outer in reversed(chain):  # outermost first
        p = op_phase(outer.name)
        if p is not None:
            return p
    return 'other'


def profile_steps(train, steps):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            train()
        wall = time.perf_counter() - t0
    sums, unmapped = {}, {}
    for e in prof.events():
        p = phase_of(e)
        sums[p] = sums.get(p, 0.0) + e.self_cpu_time_total * 1e-6
        if p == 'other' and not is_bookkeeping(e.name):
            unmapped[e.name] = unmapped.get(e.name, 0.0) + e.self_cpu_time_total * 1e-6
    sums.pop('other', None)
    per_step = {k: v / steps for k, v in sums.items()}
    top = sorted(unmapped.items(), key=lambda kv: -kv[1])[:5]
    return {
        'profile_steps': steps,
        'profile_wall_s': wall / steps,
        'phases': per_step,
        # Wall time outside the grouped ops: autograd engine frames, Python, the profiler itself.
        'other_s': max(0.0, wall / steps - sum(per_step.values())),
        'unmapped_top': [[k, v / steps] for k, v in top],
    }


def main():
    flags, pos, argv, i = {}, [], sys.argv[1:], 0
    while i < len(argv):
        if argv[i].startswith('--'):
            flags[argv[i][2:]] = argv[i + 1]; i += 2
        else:
            pos.append(argv[i]); i += 1
    threads, depth, batch, channels, size = (int(a) for a in pos[:5])
    net = flags.get('net', 'cifar')
    steps, warm = int(flags.get('steps', 7)), int(flags.get('warmup', 2))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = build(net, depth, channels)
    x = torch.randn(batch, channels, size, size); y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def train():
        opt.zero_grad(set_to_none=True); F.cross_entropy(m(x), y).backward(); opt.step()

    out = {'torch': torch.__version__, 'threads': threads, 'net': net, 'depth': depth}
    m.train()
    if 'profile' in flags:
        for _ in range(warm):
            train()
        out.update(profile_steps(train, int(flags['profile'])))
    else:
        out['train_img_s'] = batch / median_seconds(train, warm, steps)
        m.eval()
        with torch.no_grad():
            out['infer_img_s'] = batch / median_seconds(lambda: m(x), warm, steps)
    out['peak_rss_mib'] = peak_rss_mib()
    print(json.dumps(out))


if __name__ == '__main__':
    main()
