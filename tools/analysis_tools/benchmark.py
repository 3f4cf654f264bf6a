# Copyright (c) OpenMMLab. All rights reserved.
"""Benchmark backbones: latency, activation memory, MACs and the fraction
of the machine's GEMM rate they reach, against input size.

    python tools/analysis_tools/benchmark.py \\
        --models l2vit-t flatten-swin-t flatten-pvt-t swin-t pvt-t \\
        --sizes 224 512 800x1344 1024 2048 --out work_dirs/bench

Each (model, size) runs in its own process, so a crash or an out-of-memory
case is reported in the table instead of ending the sweep. The GEMM rate
is measured by the same workers in the same sweep, so ratios between rows
are comparable even on a shared machine; absolute times are not.

Modes: ``infer`` (eval, no grad), ``train`` (forward + backward of the
backbone) and ``det-train`` (a whole Mask R-CNN training step, 2 images,
from mmdet's shipped config with the backbone swapped). ``--dtype`` bf16 or
fp16 runs under autocast; ``--compile`` adds ``torch.compile`` figures.
"""
import argparse
import gc
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

# name -> (registry type, constructor arguments)
MODELS = {
    'l2vit-t': ('mmplugin_l2vit.L2ViT', dict(arch='tiny')),
    'l2vit-s': ('mmplugin_l2vit.L2ViT', dict(arch='small')),
    'l2vit-b': ('mmplugin_l2vit.L2ViT', dict(arch='base')),
    'flatten-pvt-t': ('mmplugin_l2vit.FLattenPVT', dict(arch='tiny')),
    'flatten-pvtv2-b0': ('mmplugin_l2vit.FLattenPVTv2', dict(arch='b0')),
    'flatten-swin-t': ('mmplugin_l2vit.FLattenSwin', dict(arch='tiny')),
    'flatten-cswin-t': ('mmplugin_l2vit.FLattenCSWin', dict(arch='tiny')),
    'swin-t': ('mmdet.SwinTransformer',
               dict(embed_dims=96, depths=[2, 2, 6, 2],
                    num_heads=[3, 6, 12, 24], window_size=7)),
    'pvt-t': ('mmdet.PyramidVisionTransformer',
              dict(num_layers=[2, 2, 2, 2])),
    'pvtv2-b0': ('mmdet.PyramidVisionTransformerV2',
                 dict(embed_dims=32, num_layers=[2, 2, 2, 2])),
}
DEFAULT_SIZES = ['224', '512', '800x1344', '1024', '2048']
DTYPES = dict(fp32=None, bf16='bfloat16', fp16='float16')


def parse_size(text):
    height, _, width = text.partition('x')
    return int(height), int(width or height)


# --------------------------------------------------------------------------
# Worker: one measurement in a fresh process, printed as one JSON line.
# --------------------------------------------------------------------------


def _peak_rss_bytes():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _current_rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _gemm_gflops(device, repeats=10, n=2048):
    import torch
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    times = []
    for _ in range(repeats + 2):
        start = _now(device)
        a @ b
        times.append(_now(device) - start)
    return 2 * n**3 / statistics.median(times[2:]) / 1e9


def _now(device):
    import torch
    if device == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter()


def _build_backbone(name, device):
    import torch  # noqa: F401
    from mmengine.registry import MODELS as ROOT

    import mmplugin_l2vit  # noqa: F401
    type_name, kwargs = MODELS[name]
    if type_name.startswith('mmdet.'):
        import mmdet.models  # noqa: F401  (registers the baselines)
    return ROOT.build(dict(type=type_name, **kwargs)).to(device)


def _build_detector_step(name, size, device):
    """A Mask R-CNN training step on 2 images with ``name`` as backbone."""
    from mmengine.hub import get_config
    from mmengine.registry import init_default_scope

    import mmplugin_l2vit  # noqa: F401
    init_default_scope('mmdet')
    from mmdet.registry import MODELS as DET
    from mmdet.testing import demo_mm_inputs
    cfg = get_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    backbone = _build_backbone(name, 'cpu')
    type_name, kwargs = MODELS[name]
    cfg.model.backbone = dict(type=type_name, **kwargs)
    with __import__('torch').no_grad():
        probe = backbone.eval()(__import__('torch').randn(1, 3, 64, 64))
    cfg.model.neck.in_channels = [o.shape[1] for o in probe]
    model = DET.build(cfg.model).to(device).train()
    packed = demo_mm_inputs(
        2, [[3, *size]] * 2, num_items=[5, 5], with_mask=True,
        device=device)
    data = model.data_preprocessor(packed, True)

    def step():
        losses = model(**data, mode='loss')
        loss = sum(v.sum() for k, v in losses.items() if 'loss' in k)
        loss.backward()

    return model, step


def run_worker(spec):
    import torch
    torch.set_num_threads(spec['threads'])
    device, size = spec['device'], tuple(spec['size'])
    mode = spec['mode']
    dtype = DTYPES[spec['dtype']]
    result = dict(spec, gemm_gflops=_gemm_gflops(device))
    gc.collect()
    if mode == 'det-train':
        model, step = _build_detector_step(spec['model'], size, device)
    else:
        model = _build_backbone(spec['model'], device)
        model.train(mode == 'train')
        x = torch.randn(1, 3, *size, device=device,
                        requires_grad=False)

        def step():
            outs = model(x)
            if mode == 'train':
                sum(o.float().mean() for o in outs).backward()

    if spec['compile']:
        model.forward = torch.compile(model.forward)
    from mmplugin_l2vit.analysis import count_macs_of
    # Activation memory: the peak above what the built model holds.
    gc.collect()
    baseline = _current_rss_bytes()

    def timed_step():
        context = (torch.autocast(device, dtype=getattr(torch, dtype))
                   if dtype else torch.autocast(device, enabled=False))
        grad = torch.enable_grad() if mode != 'infer' else torch.no_grad()
        with context, grad:
            step()
        if mode != 'infer':
            model.zero_grad(set_to_none=True)

    result['gmacs'] = count_macs_of(timed_step)['total'] / 1e9
    for _ in range(spec['warmup']):
        timed_step()
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    times = []
    for _ in range(spec['repeats']):
        start = _now(device)
        timed_step()
        times.append(_now(device) - start)
    latency = statistics.median(times)
    if device == 'cuda':
        peak = torch.cuda.max_memory_allocated() - baseline
    else:
        peak = _peak_rss_bytes() - baseline
    result.update(
        status='ok',
        latency_ms=latency * 1e3,
        peak_mem_mb=max(peak, 0) / 2**20,
        gflops=2 * result['gmacs'] / latency,
    )
    result['gemm_fraction'] = result['gflops'] / result['gemm_gflops']
    print('RESULT ' + json.dumps(result), flush=True)


# --------------------------------------------------------------------------
# Driver: one worker process per (model, size), then table, JSON, plots.
# --------------------------------------------------------------------------


def measure(spec, timeout):
    cmd = [sys.executable, osp.abspath(__file__), '--worker', json.dumps(spec)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO, os.environ.get('PYTHONPATH', '')]))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(spec, status=f'timeout ({timeout}s)')
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[len('RESULT '):])
    tail = (proc.stderr.strip().splitlines() or ['killed'])[-1]
    if proc.returncode < 0 or 'out of memory' in proc.stderr.lower():
        tail = f'out of memory or killed (rc {proc.returncode})'
    return dict(spec, status=f'failed: {tail[:120]}')


HEADER = (f'{"model":<18}{"size":>10}{"mode":>10}{"dtype":>6}'
          f'{"compile":>8}{"latency ms":>12}{"peak MB":>10}'
          f'{"GMACs":>9}{"GFLOP/s":>9}{"% GEMM":>8}')


def format_row(r):
    size = 'x'.join(map(str, r['size']))
    prefix = (f'{r["model"]:<18}{size:>10}{r["mode"]:>10}'
              f'{r["dtype"]:>6}{str(r["compile"]):>8}')
    if r['status'] != 'ok':
        return f'{prefix}  {r["status"]}'
    return (f'{prefix}{r["latency_ms"]:>12.1f}{r["peak_mem_mb"]:>10.0f}'
            f'{r["gmacs"]:>9.2f}{r["gflops"]:>9.1f}'
            f'{100 * r["gemm_fraction"]:>7.0f}%')


def print_table(results):
    print(HEADER)
    print('-' * len(HEADER))
    for r in results:
        print(format_row(r))


def plot(results, prefix):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    for key, label in (('latency_ms', 'latency (ms)'),
                       ('peak_mem_mb', 'peak activation memory (MB)')):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for name in dict.fromkeys(r['model'] for r in results):
            rows = [r for r in results
                    if r['model'] == name and r['status'] == 'ok']
            if not rows:
                continue
            pixels = [r['size'][0] * r['size'][1] for r in rows]
            ax.loglog(pixels, [r[key] for r in rows], 'o-', label=name)
        ax.set_xlabel('input pixels')
        ax.set_ylabel(label)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(f'{prefix}_{key}.png', dpi=120)
        plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', nargs='+', default=['l2vit-t'],
                        choices=sorted(MODELS))
    parser.add_argument('--sizes', nargs='+', default=DEFAULT_SIZES,
                        help='H or HxW')
    parser.add_argument('--mode', default='infer',
                        choices=['infer', 'train', 'det-train'])
    parser.add_argument('--dtype', default='fp32', choices=sorted(DTYPES))
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--compile', action='store_true',
                        help='also measure torch.compile')
    parser.add_argument('--threads', type=int,
                        default=min(os.cpu_count() or 1, 2))
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--timeout', type=int, default=900,
                        help='seconds per (model, size)')
    parser.add_argument('--out', help='prefix for the .json and .png files')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        run_worker(json.loads(args.worker))
        return
    results = []
    print(HEADER, flush=True)
    for name in args.models:
        for text in args.sizes:
            for compiled in ([False, True] if args.compile else [False]):
                spec = dict(model=name, size=parse_size(text),
                            mode=args.mode, dtype=args.dtype,
                            device=args.device, compile=compiled,
                            threads=args.threads, warmup=args.warmup,
                            repeats=args.repeats)
                results.append(measure(spec, args.timeout))
                print(format_row(results[-1]), flush=True)
    print()
    print_table(results)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(f'{args.out}.json', 'w') as f:
            json.dump(results, f, indent=1)
        plot(results, args.out)
        print(f'\nwrote {args.out}.json and {args.out}_*.png')


if __name__ == '__main__':
    main()
