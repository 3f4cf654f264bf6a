# Copyright (c) OpenMMLab. All rights reserved.
"""Benchmark backbones: latency, activation memory, MACs and the fraction
of the machine's GEMM rate they reach, against input size.

    python tools/analysis_tools/benchmark.py \\
        --models L2ViT:tiny flatten-swin-t flatten-pvt-t swin-t pvt-t \\
        --shape 224 --shape 800 1344 --shape 2048 --baseline swin-t \\
        --out work_dirs/bench/fp32

Models are named as in every tool of the plugin: a config file (its
``model.backbone``), a registered ``TYPE[:ARCH]`` or a short name that
stands for one (``l2vit-t`` is ``L2ViT:tiny``, ``swin-t`` mmdet's Swin-T;
see ``mmplugin_l2vit.analysis.SHORT_NAMES``). ``--shape H [W]`` may be
repeated; it defaults to 224, 512, 800x1344, 1024 and 2048.

Each (model, size) runs in its own process, so a crash or an out-of-memory
case is reported in the table instead of ending the sweep. Models are
interleaved size by size and the GEMM rate is measured by every worker, so
ratios between rows of one sweep are comparable even on a shared machine;
absolute times are not. Where the load drifts, ``--rounds N`` runs every
worker N times, the models taking turns, and reports the median round.
The fraction of the GEMM rate sets the fastest run against the fastest
GEMM (of all rounds): other load only ever slows either, so both are the
least disturbed figures (a median run against the best GEMM would count
the load against the model alone).
After the table come the ratios a user compares: each model against
``--baseline`` at the same size, and each model's time and memory between
consecutive sizes against the ratio of their pixels.

Another implementation is timed side by side through a config file whose
``custom_imports`` registers its type (the module must be importable, e.g.
on ``PYTHONPATH``; every worker loads the config).

Modes: ``infer`` (eval, no grad), ``train`` (forward + backward of the
backbone) and ``det-train`` (a whole Mask R-CNN training step, 2 images,
from mmdet's shipped config with the backbone swapped; its RPN starts at
zero, so that the heads' work is the same for every backbone). ``--dtype``
bf16 or fp16 runs under autocast; ``--compile`` adds ``torch.compile``
figures.

``--allocator caching`` makes glibc's ``malloc`` keep the memory a step
frees for the next one, as the CUDA caching allocator does on a GPU (see
:data:`CACHING_ALLOCATOR_ENV`). With the system default every tensor
larger than glibc's mmap threshold (at most 32 MB) is mapped afresh and
faulted in page by page, and the heap's top is trimmed back to the
system: a training step then spends a share of its time zeroing pages,
the more so the more and the larger the tensors it allocates (a step that
recomputes allocates twice). Activation memory is counted tensor by
tensor either way, so its figures do not change.

``--denormals flush`` makes the CPU workers treat denormal floats as zero
(``torch.set_flush_denormal``). x86 CPUs take many times longer on a
denormal operand; GPUs do not. mmdet's Swin masks its shifted windows with
-100, so a softmax gives masked keys probabilities near e^-100, denormal in
float32 (11% of its attention probabilities at 256², randomly
initialised), and the products that read them pay for it.

``--backend pytorch onnxruntime`` also times each backbone exported to
ONNX (a static graph at the size, see tools/deployment/pytorch2onnx.py) in
onnxruntime on the CPU with ``--threads`` intra-op threads, next to eager
PyTorch (fp32 inference only; onnxruntime's memory is not measured), and
adds their speed ratio to the summary.
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
sys.path.insert(0, REPO)

from mmplugin_l2vit import analysis  # noqa: E402

DEFAULT_SHAPES = [(224, 224), (512, 512), (800, 1344), (1024, 1024),
                  (2048, 2048)]
DTYPES = dict(fp32=None, bf16='bfloat16', fp16='float16')
BACKENDS = ('pytorch', 'onnxruntime')
# glibc's tunables for ``--allocator caching``: no allocation is mapped on
# its own (the threshold is above any tensor), and freed memory is never
# trimmed from the heap, so a step reuses the pages of the one before.
CACHING_ALLOCATOR_ENV = dict(
    MALLOC_MMAP_THRESHOLD_=str(2**32), MALLOC_TRIM_THRESHOLD_=str(2**34))

# --------------------------------------------------------------------------
# Worker: one measurement in a fresh process, printed as one JSON line.
# --------------------------------------------------------------------------


def _gemm_gflops(device, repeats=10, n=2048):
    """The machine's fp32 GEMM rate: the best of ``repeats`` products of
    two n x n matrices (the best, as other load only ever slows it)."""
    import torch
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    times = []
    for _ in range(repeats + 2):
        start = _now(device)
        a @ b
        times.append(_now(device) - start)
    return 2 * n**3 / min(times[2:]) / 1e9


def _now(device):
    import torch
    if device == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter()


def _checkpointing(with_cp):
    # Only asked for when wanted: some baselines (mmdet's PVT) have no
    # ``with_cp`` argument at all.
    return dict(with_cp=True) if with_cp else {}


def _build_backbone(name, device, with_cp=False):
    return analysis.build_backbone(name, **_checkpointing(with_cp)).to(device)


def _build_detector_step(name, size, device, with_cp):
    """A Mask R-CNN training step on 2 images with ``name`` as backbone.

    The RPN's two output convolutions start at zero, so it scores every
    anchor alike and proposes the same boxes whatever the backbone: the
    heads then do the same work for every model. An untrained RPN's
    proposals follow the random features instead, and the heads' cost with
    them (RoIAlign samples a box in proportion to its size, the mask head
    runs on the positives): one backbone's heads took 1.5x another's.
    """
    import torch
    from mmengine.hub import get_config
    from mmengine.registry import init_default_scope

    backbone = _build_backbone(name, 'cpu')
    init_default_scope('mmdet')
    from mmdet.registry import MODELS as DET
    from mmdet.testing import demo_mm_inputs
    cfg = get_config('mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    cfg.model.backbone = dict(
        analysis.backbone_config(name), **_checkpointing(with_cp))
    with torch.no_grad():
        probe = backbone(torch.randn(1, 3, 64, 64))
    cfg.model.neck.in_channels = [o.shape[1] for o in probe]
    model = DET.build(cfg.model).to(device).train()
    for conv in (model.rpn_head.rpn_cls, model.rpn_head.rpn_reg):
        torch.nn.init.zeros_(conv.weight)
        torch.nn.init.zeros_(conv.bias)
    packed = demo_mm_inputs(
        2, [[3, *size]] * 2, num_items=[5, 5], with_mask=True, device=device)
    data = model.data_preprocessor(packed, True)

    def step():
        losses = model(**data, mode='loss')
        loss, _ = model.parse_losses(losses)
        loss.backward()

    return model, step


def run_worker(spec):
    import torch
    torch.set_num_threads(spec['threads'])
    flush_denormals = spec.get('denormals') == 'flush'
    if flush_denormals and not torch.set_flush_denormal(True):
        raise RuntimeError('this CPU cannot flush denormals to zero')
    device, size = spec['device'], tuple(spec['size'])
    mode = spec['mode']
    dtype = DTYPES[spec['dtype']]
    result = dict(spec, gemm_gflops=_gemm_gflops(device))
    gc.collect()
    if mode == 'det-train':
        model, step = _build_detector_step(spec['model'], size, device,
                                           spec['with_cp'])
    else:
        model = _build_backbone(spec['model'], device, spec['with_cp'])
        model.train(mode == 'train')
        x = torch.randn(1, 3, *size, device=device, requires_grad=False)

        def step():
            outs = model(x)
            if mode == 'train':
                sum(o.float().mean() for o in outs).backward()

    if spec.get('backend') == 'onnxruntime':
        return _run_onnxruntime(spec, model, x, result)

    if spec['compile']:
        model.forward = torch.compile(model.forward)

    def timed_step():
        context = (
            torch.autocast(device, dtype=getattr(torch, dtype))
            if dtype else torch.autocast(device, enabled=False))
        grad = torch.enable_grad() if mode != 'infer' else torch.no_grad()
        with context, grad:
            step()
        if mode != 'infer':
            # Gradients stay allocated from the first step on, so that the
            # peak above the baseline is activation memory only.
            model.zero_grad(set_to_none=False)

    result['gmacs'] = analysis.count_macs_of(timed_step)['total'] / 1e9
    for _ in range(spec['warmup']):
        timed_step()
    times = []
    for _ in range(spec['repeats']):
        start = _now(device)
        timed_step()
        times.append(_now(device) - start)
    # Activation memory: the peak above what the built model holds.
    if device == 'cuda':
        torch.cuda.synchronize()
        baseline = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        timed_step()
        peak = torch.cuda.max_memory_allocated() - baseline
    else:
        peak = analysis.peak_activation_memory(model, timed_step)
    _report(result, times, peak)


def _run_onnxruntime(spec, model, x, result):
    """Time ``model`` exported to ONNX at the size of ``x`` in onnxruntime;
    MACs are those of the PyTorch model."""
    import tempfile

    import torch

    from mmplugin_l2vit.deployment import (INPUT_NAME, export_onnx,
                                           onnxruntime_session)
    with torch.no_grad():
        macs = analysis.count_macs_of(lambda: model(x))['total']
    result['gmacs'] = macs / 1e9
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'model.onnx')
        export_onnx(model, tuple(spec['size']), path)
        session = onnxruntime_session(path, spec['threads'])
    feed = {INPUT_NAME: x.numpy()}
    for _ in range(spec['warmup']):
        session.run(None, feed)
    times = []
    for _ in range(spec['repeats']):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    _report(result, times, peak=None)


def _report(result, times, peak):
    """Print the worker's result: latencies (s) of the timed runs and the
    peak activation memory (bytes, None where not measured)."""
    latency = statistics.median(times)
    result.update(
        status='ok',
        latency_ms=latency * 1e3,
        best_latency_ms=min(times) * 1e3,
        peak_mem_mb=None if peak is None else max(peak, 0) / 2**20,
        gflops=2 * result['gmacs'] / latency,
    )
    result['gemm_fraction'] = gemm_fraction(result)
    print('RESULT ' + json.dumps(result), flush=True)


# --------------------------------------------------------------------------
# Driver: one worker process per (model, size), then table, JSON, plots.
# --------------------------------------------------------------------------


def measure(spec, timeout):
    cmd = [sys.executable, osp.abspath(__file__), '--worker', json.dumps(spec)]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([REPO,
                                    os.environ.get('PYTHONPATH', '')]))
    if spec.get('allocator') == 'caching':
        env.update(CACHING_ALLOCATOR_ENV)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return dict(spec, status=f'timeout ({timeout}s)')
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[len('RESULT '):])
    tail = (proc.stderr.strip().splitlines() or ['killed'])[-1]
    if proc.returncode < 0 or 'out of memory' in proc.stderr.lower():
        tail = f'out of memory or killed (rc {proc.returncode})'
    return dict(spec, status=f'failed: {tail[:120]}')


def gemm_fraction(result):
    """The model's rate in its fastest run over the fastest GEMM's."""
    best_gflops = 2 * result['gmacs'] / (result['best_latency_ms'] / 1e3)
    return best_gflops / result['gemm_gflops']


def median_round(runs):
    """One result from several rounds of a worker: the median latency
    (the upper one of an even count); the fastest run and GEMM of all
    rounds for the fraction of the GEMM rate; the first failure if no
    round succeeded."""
    ok = [r for r in runs if r['status'] == 'ok']
    if not ok:
        return runs[0]
    result = dict(sorted(ok, key=lambda r: r['latency_ms'])[len(ok) // 2])
    result['round_latencies_ms'] = [r['latency_ms'] for r in ok]
    result['best_latency_ms'] = min(r['best_latency_ms'] for r in ok)
    result['gemm_gflops'] = max(r['gemm_gflops'] for r in ok)
    result['gemm_fraction'] = gemm_fraction(result)
    return result


HEADER = (f'{"model":<18}{"size":>10}{"backend":>12}{"mode":>10}'
          f'{"dtype":>6}{"compile":>8}{"cp":>6}{"latency ms":>12}'
          f'{"peak MB":>10}{"GMACs":>9}{"GFLOP/s":>9}{"% GEMM":>8}')


def size_text(r):
    return 'x'.join(str(side) for side in r['size'])


def backend(r):
    """The row's backend (results written before there was a choice ran
    in PyTorch)."""
    return r.get('backend', 'pytorch')


def memory_text(r):
    return '-' if r['peak_mem_mb'] is None else f'{r["peak_mem_mb"]:.0f}'


def memory_ratio(r, ref):
    """``r``'s peak memory over ``ref``'s; None where one is unmeasured."""
    if r['peak_mem_mb'] is None or ref['peak_mem_mb'] is None:
        return None
    return r['peak_mem_mb'] / max(ref['peak_mem_mb'], 1e-9)


def format_row(r):
    prefix = (f'{r["model"]:<18}{size_text(r):>10}{backend(r):>12}'
              f'{r["mode"]:>10}{r["dtype"]:>6}{str(r["compile"]):>8}'
              f'{str(r["with_cp"]):>6}')
    if r['status'] != 'ok':
        return f'{prefix}  {r["status"]}'
    return (f'{prefix}{r["latency_ms"]:>12.1f}{memory_text(r):>10}'
            f'{r["gmacs"]:>9.2f}{r["gflops"]:>9.1f}'
            f'{100 * r["gemm_fraction"]:>7.0f}%')


def print_table(results):
    print(HEADER)
    print('-' * len(HEADER))
    for r in results:
        print(format_row(r))


def _variant(r):
    """What a row measures apart from its model and size."""
    return r['mode'], r['dtype'], r['compile'], r['with_cp'], backend(r)


def baseline_ratios(results, baseline):
    """``(row, speedup, memory ratio)`` of every successful row against
    the ``baseline`` model's row of the same size and variant."""
    reference = {
        (tuple(r['size']), _variant(r)): r
        for r in results if r['model'] == baseline and r['status'] == 'ok'
    }
    ratios = []
    for r in results:
        ref = reference.get((tuple(r['size']), _variant(r)))
        if r['model'] != baseline and ref and r['status'] == 'ok':
            ratios.append(
                (r, ref['latency_ms'] / r['latency_ms'], memory_ratio(r, ref)))
    return ratios


def scaling_ratios(results):
    """``(smaller, larger, pixel ratio, time ratio, memory ratio)`` for
    consecutive sizes (by pixels) of each model and variant."""
    groups = {}
    for r in results:
        if r['status'] == 'ok':
            groups.setdefault((r['model'], _variant(r)), []).append(r)
    ratios = []
    for rows in groups.values():
        rows.sort(key=lambda r: r['size'][0] * r['size'][1])
        for small, large in zip(rows, rows[1:]):
            pixels = ((large['size'][0] * large['size'][1]) /
                      (small['size'][0] * small['size'][1]))
            ratios.append((small, large, pixels,
                           large['latency_ms'] / small['latency_ms'],
                           memory_ratio(large, small)))
    return ratios


def backend_ratios(results):
    """``(onnxruntime row, speedup)`` against the PyTorch row of the same
    model, size and variant."""
    reference = {
        (r['model'], tuple(r['size']), _variant(r)[:-1]): r
        for r in results if backend(r) == 'pytorch' and r['status'] == 'ok'
    }
    ratios = []
    for r in results:
        ref = reference.get((r['model'], tuple(r['size']), _variant(r)[:-1]))
        if backend(r) != 'pytorch' and ref and r['status'] == 'ok':
            ratios.append((r, ref['latency_ms'] / r['latency_ms']))
    return ratios


def ratio_text(ratio):
    return '    -' if ratio is None else f'{ratio:5.2f}'


def summary_lines(results, baseline=None):
    lines = []
    if baseline:
        lines.append(f'against {baseline} (same size and variant):')
        for r, speedup, memory in baseline_ratios(results, baseline):
            lines.append(f'  {r["model"]:<18}{size_text(r):>10}  '
                         f'{speedup:5.2f}x as fast, {ratio_text(memory)}x '
                         'memory')
    onnx_rows = backend_ratios(results)
    if onnx_rows:
        lines.append('onnxruntime against eager PyTorch (same model, size '
                     'and threads):')
        for r, speedup in onnx_rows:
            lines.append(f'  {r["model"]:<18}{size_text(r):>10}  '
                         f'{speedup:5.2f}x as fast')
    lines.append('scaling between consecutive sizes:')
    for small, large, pixels, time_ratio, memory in scaling_ratios(results):
        lines.append(f'  {small["model"]:<18}{size_text(small):>10} -> '
                     f'{size_text(large):<10} pixels x{pixels:.2f}: '
                     f'time x{time_ratio:.2f}, memory x{ratio_text(memory)}')
    return lines


def markdown_table(results):
    lines = [
        '| model | size | backend | mode | dtype | compile | with_cp | '
        'latency (ms) | peak memory (MB) | GMACs | % of GEMM rate |',
        '|---|---|---|---|---|---|---|---:|---:|---:|---:|'
    ]
    for r in results:
        cells = [
            r['model'],
            size_text(r),
            backend(r), r['mode'], r['dtype'],
            str(r['compile']),
            str(r['with_cp'])
        ]
        if r['status'] == 'ok':
            cells += [
                f'{r["latency_ms"]:.1f}',
                memory_text(r), f'{r["gmacs"]:.2f}',
                f'{100 * r["gemm_fraction"]:.0f}%'
            ]
        else:
            cells += [r['status'], '', '', '']
        lines.append('| ' + ' | '.join(cells) + ' |')
    return lines


def plot(results, prefix):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    for key, label in (('latency_ms', 'latency (ms)'),
                       ('peak_mem_mb', 'peak activation memory (MB)')):
        fig, ax = plt.subplots(figsize=(6, 4.5))
        groups = {}
        for r in results:
            if r['status'] == 'ok' and r[key] is not None:
                groups.setdefault((r['model'], _variant(r)), []).append(r)
        for (name, (_, dtype, compiled, with_cp,
                    runtime)), rows in groups.items():
            rows.sort(key=lambda r: r['size'][0] * r['size'][1])
            options = ((dtype, dtype != 'fp32'), ('compiled', compiled),
                       ('with_cp', with_cp), (runtime, runtime != 'pytorch'))
            tags = [tag for tag, on in options if on]
            ax.loglog([r['size'][0] * r['size'][1] for r in rows],
                      [r[key] for r in rows],
                      'o-',
                      label=' '.join([name] + tags))
        ax.set_xlabel('input pixels')
        ax.set_ylabel(label)
        ax.grid(True, which='both', alpha=0.3)
        ax.legend(fontsize='small')
        fig.tight_layout()
        fig.savefig(f'{prefix}_{key}.png', dpi=120)
        plt.close(fig)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--models',
        nargs='+',
        default=['l2vit-t'],
        help='backbones, each ' + analysis.BACKBONE_HELP)
    analysis.add_shape_argument(
        parser,
        'input size H (square) or H W; repeat for more sizes (default: '
        f'{", ".join(map(analysis.shape_text, DEFAULT_SHAPES))})',
        repeatable=True)
    parser.add_argument(
        '--baseline',
        help='a model of --models to report '
        'speed and memory ratios against')
    parser.add_argument(
        '--mode', default='infer', choices=['infer', 'train', 'det-train'])
    parser.add_argument('--dtype', default='fp32', choices=sorted(DTYPES))
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument(
        '--compile', action='store_true', help='also measure torch.compile')
    parser.add_argument(
        '--backend',
        nargs='+',
        choices=BACKENDS,
        default=['pytorch'],
        help='eager PyTorch and/or the model exported to ONNX in '
        'onnxruntime (CPU, fp32 inference)')
    parser.add_argument(
        '--with-cp',
        choices=['off', 'on', 'both'],
        default='off',
        help='gradient checkpointing of the '
        'backbone (train and det-train modes)')
    parser.add_argument(
        '--allocator',
        choices=['system', 'caching'],
        default='system',
        help='CPU workers: glibc malloc as configured (system) or keeping '
        'freed memory for reuse, as a GPU caching allocator does '
        '(caching)')
    parser.add_argument(
        '--denormals',
        choices=['keep', 'flush'],
        default='keep',
        help='CPU workers: compute with denormal floats (keep) or treat '
        'them as zero (flush), as far as speed goes like a GPU')
    parser.add_argument(
        '--threads', type=int, default=min(os.cpu_count() or 1, 2))
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument(
        '--rounds',
        type=int,
        default=1,
        help='run every (model, size) worker this many times, the models '
        'taking turns, and report the median round: on a machine whose '
        'load drifts, each model sees the same mix of slow and fast '
        'periods')
    parser.add_argument(
        '--timeout', type=int, default=900, help='seconds per (model, size)')
    parser.add_argument(
        '--out', help='prefix for the .json, .md and .png '
        'files')
    parser.add_argument('--worker', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return args
    for name in args.models:
        try:
            analysis.backbone_config(name)
        except (OSError, KeyError, ValueError) as error:
            parser.error(f'unknown model {name!r}: {error}')
    args.shape = (
        DEFAULT_SHAPES
        if args.shape is None else analysis.parse_shapes(parser, args.shape))
    if args.rounds < 1:
        parser.error(f'--rounds must be at least 1, got {args.rounds}')
    cpu_fp32_inference = (args.mode, args.dtype,
                          args.device) == ('infer', 'fp32', 'cpu')
    if 'onnxruntime' in args.backend and not cpu_fp32_inference:
        parser.error('--backend onnxruntime times fp32 inference on the '
                     'CPU: use --mode infer --dtype fp32 --device cpu')
    if args.baseline and args.baseline not in args.models:
        parser.error(f'--baseline {args.baseline} is not one of --models')
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        run_worker(json.loads(args.worker))
        return
    cp_options = dict(off=[False], on=[True], both=[False, True])
    results = []
    print(HEADER, flush=True)
    # Size by size, so that the models compared at one size run close in
    # time, under the same load.
    for shape in args.shape:
        specs = [
            dict(
                model=name,
                size=shape,
                mode=args.mode,
                dtype=args.dtype,
                device=args.device,
                compile=compiled,
                with_cp=with_cp,
                backend=runtime,
                threads=args.threads,
                allocator=args.allocator,
                denormals=args.denormals,
                warmup=args.warmup,
                repeats=args.repeats) for name in args.models
            for with_cp in cp_options[args.with_cp] for runtime in args.backend
            for compiled in ([False, True] if args.compile
                             and runtime == 'pytorch' else [False])
        ]
        runs = [[] for _ in specs]
        for _ in range(args.rounds):
            for spec, spec_runs in zip(specs, runs):
                spec_runs.append(measure(spec, args.timeout))
                if args.rounds == 1:
                    print(format_row(spec_runs[-1]), flush=True)
        if args.rounds > 1:
            for spec_runs in runs:
                results.append(median_round(spec_runs))
                print(format_row(results[-1]), flush=True)
        else:
            results.extend(spec_runs[0] for spec_runs in runs)
    print()
    print_table(results)
    summary = summary_lines(results, args.baseline)
    if args.allocator == 'caching':
        summary.insert(
            0, 'allocator: caching (freed memory kept for reuse, '
            f'{" ".join(f"{k}={v}" for k, v in CACHING_ALLOCATOR_ENV.items())}'
            ')')
    if args.denormals == 'flush':
        summary.insert(0, 'denormals: flushed to zero')
    print('\n' + '\n'.join(summary))
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(f'{args.out}.json', 'w') as f:
            json.dump(results, f, indent=1)
        with open(f'{args.out}.md', 'w') as f:
            f.write('\n'.join(markdown_table(results) + [''] + summary) + '\n')
        plot(results, args.out)
        print(f'\nwrote {args.out}.json, {args.out}.md and '
              f'{args.out}_*.png')


if __name__ == '__main__':
    main()
