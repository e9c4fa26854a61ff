"""PyTorch side of `npm run bench:gpu`: the same networks on a CUDA GPU, timed by the anchor's
`bench` (../shared/anchors/torch_resnet.py, or a copy in scripts/anchors/ where ../shared is not
at hand: the device machine): training in fp32, TF32 and bf16 autocast, inference in fp32 and bf16,
and the peak memory PyTorch allocates for an fp32 training step. Prints one JSON line.

Usage: python3 torch_gpu_bench.py CONFIGS_JSON [--steps N] [--warmup N]
CONFIGS_JSON: [{"net": "cifar"|"imagenet", "depth": D, "channels": 3, "size": S, "batch": B}, ...]
(cifar: the anchor's projection-shortcut ResNet, 10 classes; imagenet: torchvision's resnetD with
10 classes, as our bench builds them)."""
import argparse, json, os, sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, 'anchors'))
sys.path.insert(0, os.path.join(here, '..', '..', 'shared', 'anchors'))
import torch, torch.nn.functional as F  # noqa: E402
from torch_resnet import bench, cifar_resnet  # noqa: E402


def build(c):
    if c['net'] == 'cifar':
        return cifar_resnet((c['depth'] - 2) // 6)
    import torchvision
    return getattr(torchvision.models, f"resnet{c['depth']}")(num_classes=10)


def peak_train_mib(c):
    """Peak allocated bytes of fp32 training steps, as torch_mem.py measures it."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    m = build(c).cuda()
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(c['batch'], c['channels'], c['size'], c['size'], device='cuda')
    y = torch.randint(0, 10, (c['batch'],), device='cuda')
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), y).backward()
        opt.step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**20
    del m, opt, x, y
    torch.cuda.empty_cache()
    return peak


def main():
    p = argparse.ArgumentParser()
    p.add_argument('configs')
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    a = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit('no CUDA GPU')
    out = []
    for c in json.loads(a.configs):
        shape = (c['channels'], c['size'], c['size'])
        row = {'config': c}
        for mode in ['fp32', 'tf32', 'bf16']:
            # The anchor measures bf16 in channels-last, as AMP users run it.
            row[f'train_{mode}'], _ = bench(build(c), shape, 10, c['batch'], mode, train=True,
                                            steps=a.steps, warm=a.warmup, channels_last=(mode == 'bf16'))
        for mode in ['fp32', 'bf16']:
            row[f'infer_{mode}'], _ = bench(build(c), shape, 10, c['batch'], mode, train=False,
                                            steps=a.steps, warm=a.warmup, channels_last=(mode == 'bf16'))
        row['peak_train_mib_fp32'] = peak_train_mib(c)
        out.append(row)
        print(f"torch {c}: {row}", file=sys.stderr, flush=True)
    print(json.dumps({'torch': torch.__version__, 'gpu': torch.cuda.get_device_name(0), 'rows': out}))


if __name__ == '__main__':
    main()
