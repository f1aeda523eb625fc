"""The peer of pulmo's inference: the same U-Net (same weights from weights/*.safetensors)
in PyTorch, on the same input size and batch, same number of CPU threads.

Prints seconds per slice of the model alone (the figure pulmo reports as "model").
Usage: bench_infer_torch.py MANIFEST.json --slices 300 --height H --width W --batch B
       [--device cuda --half]   (as pulmo on CUDA: input copied to the GPU per batch,
                                 half precision, softmax copied back to the CPU)
"""
import argparse
import json
import os
import time

import torch
import torch.nn as nn
from safetensors.torch import load_file


class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(x)))


class UNet(nn.Module):
    """Mirror of pulmo's `infer::torch::UNet` (same parameter names)."""

    def __init__(self, cin, classes, base, depth):
        super().__init__()
        ch = lambda i: base << i
        c = cin
        for i in range(depth):
            setattr(self, f"down{i}", Block(c, ch(i)))
            c = ch(i)
        self.bottom = Block(c, ch(depth))
        for i in range(depth):
            setattr(self, f"upconv{i}", nn.ConvTranspose2d(ch(i + 1), ch(i), 2, stride=2))
            setattr(self, f"up{i}", Block(2 * ch(i), ch(i)))
        self.head = nn.Conv2d(ch(0), classes, 1)
        self.depth = depth

    def forward(self, x):
        skips = []
        for i in range(self.depth):
            y = getattr(self, f"down{i}")(x)
            skips.append(y)
            x = torch.max_pool2d(y, 2)
        x = self.bottom(x)
        for i in reversed(range(self.depth)):
            up = getattr(self, f"upconv{i}")(x)
            x = getattr(self, f"up{i}")(torch.cat([up, skips.pop()], 1))
        return self.head(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("manifest")
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--half", action="store_true")
    ap.add_argument("--flip", action="store_true",
                    help="also run each batch mirrored left-right and average (the manifest's "
                         "input.flip_average, as pulmo does)")
    ap.add_argument("--cold", action="store_true",
                    help="no warm-up: one run that includes the first batch's kernel and "
                         "cuDNN set-up (as pulmo's first job after loading the model)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = json.load(open(a.manifest))
    arch = m["arch"]
    net = UNet(1, len(m["classes"]), arch["base_channels"], arch["depth"])
    state = load_file(os.path.join(os.path.dirname(a.manifest), m["weights"]))
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    assert not missing and not unexpected, (missing, unexpected)
    net.eval()
    dev = torch.device(a.device)
    net.to(dev)
    if a.half:
        net.half()
    x = torch.rand(a.batch, 1, a.height, a.width)

    def run(xb):
        # Same work as pulmo's TorchModel::predict: to the device, (half), forward,
        # softmax in f32, back to the CPU.
        xb = xb.to(dev)
        if a.half:
            xb = xb.half()
        p = net(xb).softmax(1, dtype=torch.float32)
        if a.flip:
            p = 0.5 * (p + net(xb.flip(-1)).softmax(1, dtype=torch.float32).flip(-1))
        return p.cpu()

    times = []
    with torch.no_grad():
        if a.cold:
            a.repeat = 1
        else:
            run(x)  # warm-up
        for _ in range(a.repeat):
            t = time.perf_counter()
            done = 0
            while done < a.slices:
                n = min(a.batch, a.slices - done)
                run(x[:n])
                done += n
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    times.sort()
    med = times[len(times) // 2]
    print(json.dumps({"peer": f"PyTorch {torch.__version__}", "threads": a.threads, "device": a.device, "half": a.half, "flip": a.flip, "cold": a.cold,
                      "slices": a.slices, "input": [a.height, a.width], "batch": a.batch,
                      "seconds_median": med, "ms_per_slice": 1000 * med / a.slices,
                      "runs": times}))


if __name__ == "__main__":
    main()
