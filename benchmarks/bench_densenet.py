"""Training throughput of the two DenseNets, and what the paper-images experiment costs.

    OMP_NUM_THREADS=1 python benchmarks/bench_densenet.py          # CPU: about a minute
    python benchmarks/bench_densenet.py --epochs 40                  # on a GPU machine

Measures images per second of full training steps as the sweep runs them: uint8 images held
on the device, normalised per batch, CIFAR's crop-and-flip, forward, loss, backward and an SGD
step with Nesterov momentum and weight decay, batches of 64. On a GPU it also measures
evaluation throughput, for float32 and for mixed precision with channels-last, and projects
the cost of the full experiment: per seed, 3 scratch runs (which are the baselines) plus 6
ordered pairs x (L_H + 1) transfers, each for EPOCHS epochs over its secondary task's training
split (45,000 images for CIFAR, 67,257 for SVHN), with a validation pass every epoch. That is
an upper bound: frozen layers skip their backward pass, and transfers into SVHN train on cached
prefix outputs.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from layerwise import count_parameters
from layerwise.nets import ARCHS
from layerwise.tasks.images import Images, random_crop_flip

TRAIN = {"cifar10": 45_000, "cifar100": 45_000, "svhn": 67_257}  # training images after validation
VAL = {"cifar10": 5_000, "cifar100": 5_000, "svhn": 6_000}
CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10}


def fake_images(n: int, device) -> Images:
    data = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, device=device)
    return Images(data, torch.full((3,), 120.0, device=device), torch.full((3,), 64.0, device=device))


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def train_rate(net, device, steps: int, warmup: int, batch: int, amp: bool, channels_last: bool) -> float:
    """Images per second of training steps."""
    images, labels = fake_images(batch * 8, device), torch.randint(0, 10, (batch * 8,), device=device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(device, memory_format=fmt).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    gen = torch.Generator(device=device).manual_seed(0)
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            began = time.perf_counter()
        idx = torch.randint(0, len(labels), (batch,), device=device, generator=gen)
        x = random_crop_flip(images[idx], gen).contiguous(memory_format=fmt)
        with torch.autocast(device.type, enabled=amp):
            loss = F.cross_entropy(net(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        loss.item()  # the sweep reads every loss, which syncs each step
    sync(device)
    return steps * batch / (time.perf_counter() - began)


@torch.no_grad()
def eval_rate(net, device, batches: int, batch: int, amp: bool, channels_last: bool) -> float:
    images = fake_images(batch, device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(device, memory_format=fmt).eval()
    idx = torch.arange(batch, device=device)
    for i in range(batches + 2):
        if i == 2:
            sync(device)
            began = time.perf_counter()
        with torch.autocast(device.type, enabled=amp):
            net(images[idx].contiguous(memory_format=fmt)).float().cpu()
    sync(device)
    return batches * batch / (time.perf_counter() - began)


def projection(layers: int, epochs: int, train_ips: float, eval_ips: float) -> tuple:
    """(jobs, training images, seconds) of the full experiment for one seed."""
    runs_per_target = 1 + 2 * (layers + 1)  # its scratch run, and 2 sources x (L_H + 1) transfers
    jobs = 3 * runs_per_target
    images = sum(runs_per_target * epochs * n for n in TRAIN.values())
    evals = sum(runs_per_target * epochs * n for n in VAL.values())
    return jobs, images, images / train_ips + evals / eval_ips


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=300, help="the experiment's train.epochs (default 300)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--cpu-steps", type=int, default=3)
    p.add_argument("--gpu-steps", type=int, default=300)
    p.add_argument("--archs", nargs="+", default=["densenet6", "densenet-bc-100"])
    args = p.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch {args.batch_size}")
    for name in args.archs:
        torch.manual_seed(0)
        net = ARCHS[name]((3, 32, 32), 10)
        cpu = train_rate(net, torch.device("cpu"), args.cpu_steps, 1, args.batch_size, False, False)
        jobs, images, _ = projection(net.num_layers, args.epochs, cpu, 3 * cpu)
        print(f"{name}: L_H={net.num_layers}, {count_parameters(net):,} parameters")
        print(f"  cpu: {cpu:,.0f} images/s training; {TRAIN['cifar10'] / cpu / 60:.0f} min per CIFAR epoch; "
              f"full experiment ({jobs} jobs x {args.epochs} epochs = {images / 1e6:,.0f} M training images "
              f"per seed): about {images / cpu / 86400:,.0f} days per seed")
        if not torch.cuda.is_available():
            continue
        gpu = torch.device("cuda")
        for amp, cl in ((False, False), (True, True)):
            train_ips = train_rate(net, gpu, args.gpu_steps, 30, args.batch_size, amp, cl)
            eval_ips = eval_rate(net, gpu, 20, 1000, amp, cl)
            jobs, images, seconds = projection(net.num_layers, args.epochs, train_ips, eval_ips)
            mode = "amp + channels-last" if amp else "float32"
            print(f"  {torch.cuda.get_device_name()} {mode}: {train_ips:,.0f} images/s training, "
                  f"{eval_ips:,.0f} evaluating; {TRAIN['cifar10'] / train_ips + VAL['cifar10'] / eval_ips:.1f} s per "
                  f"CIFAR epoch; full experiment: {jobs} jobs, {hours(seconds)} per seed at {args.epochs} epochs")


if __name__ == "__main__":
    main()
