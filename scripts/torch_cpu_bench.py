"""PyTorch side of `npm run bench`: the anchor's CIFAR ResNet (../shared/anchors/torch_resnet.py)
on the CPU with a given thread count, timed the way our bench times ours (median step, random
data). Prints one JSON line. Usage: python3 torch_cpu_bench.py THREADS DEPTH BATCH CHANNELS SIZE"""
import json, os, sys, time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, '..', '..', 'shared', 'anchors'))
import torch, torch.nn.functional as F  # noqa: E402
from torch_resnet import cifar_resnet  # noqa: E402


def median_seconds(fn, warm, steps):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(steps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    ts.sort()
    return ts[len(ts) // 2]


def main():
    threads, depth, batch, channels, size = (int(a) for a in sys.argv[1:6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    m = cifar_resnet((depth - 2) // 6)
    m[0] = torch.nn.Conv2d(channels, 16, 3, 1, 1, bias=False)
    x = torch.randn(batch, channels, size, size); y = torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def train():
        opt.zero_grad(set_to_none=True); F.cross_entropy(m(x), y).backward(); opt.step()

    m.train(); t_train = median_seconds(train, 2, 7)
    m.eval()
    with torch.no_grad():
        t_infer = median_seconds(lambda: m(x), 2, 7)
    print(json.dumps({'torch': torch.__version__, 'threads': threads, 'train_img_s': batch / t_train,
                      'infer_img_s': batch / t_infer}))


if __name__ == '__main__':
    main()
