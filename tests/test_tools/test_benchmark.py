# Copyright (c) OpenMMLab. All rights reserved.
"""tools/analysis_tools/benchmark.py: one process per measurement (a
failing model is reported, not fatal), table/JSON/Markdown/plots, and the
ratios it derives."""
import importlib.util
import json
import os.path as osp

import pytest
import torch

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

spec = importlib.util.spec_from_file_location(
    'benchmark_tool', osp.join(REPO, 'tools/analysis_tools/benchmark.py'))
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)

# Another implementation, registered by a module the config imports.
TOY_MODULE = '''
from mmplugin_l2vit import L2ViT
from mmplugin_l2vit.registry import MODELS


@MODELS.register_module()
class ToyL2ViT(L2ViT):

    def __init__(self, **kwargs):
        super().__init__(arch=dict(
            embed_dims=[16, 32, 64, 128], depths=[2, 2, 2, 2],
            num_heads=[1, 2, 4, 8], window_size=7), **kwargs)
'''
TOY_CONFIG = '''
custom_imports = dict(imports=['toy_backbones'], allow_failed_imports=False)
model = dict(backbone=dict(type='mmplugin_l2vit.ToyL2ViT'))
'''
# Fails when built: 3 heads do not divide 16 channels.
BROKEN_CONFIG = '''
model = dict(backbone=dict(type='mmplugin_l2vit.FLattenPVT', arch=dict(
    embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1],
    num_heads=[3, 3, 3, 3])))
'''


def row(model, size, latency, memory, **variant):
    return dict(
        dict(mode='infer', dtype='fp32', compile=False, with_cp=False),
        model=model,
        size=list(size),
        status='ok',
        latency_ms=latency,
        peak_mem_mb=memory,
        **variant)


def test_sweep_reports_failures_and_writes_outputs(tmp_path, capsys,
                                                   monkeypatch):
    (tmp_path / 'toy_backbones.py').write_text(TOY_MODULE)
    (tmp_path / 'toy.py').write_text(TOY_CONFIG)
    (tmp_path / 'broken.py').write_text(BROKEN_CONFIG)
    # The workers load the configs from the working directory and import
    # the toy module from PYTHONPATH.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('PYTHONPATH', str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    prefix = tmp_path / 'out' / 'bench'
    benchmark.main([
        '--models', 'toy.py', 'broken.py', '--shape', '64', '--shape', '64',
        '96', '--mode', 'train', '--with-cp', 'both', '--threads', '1',
        '--warmup', '1', '--repeats', '2', '--out',
        str(prefix)
    ])
    results = json.loads((tmp_path / 'out' / 'bench.json').read_text())
    assert [(r['model'], r['size'], r['with_cp'])
            for r in results] == [('toy.py', [64, 64], False),
                                  ('toy.py', [64, 64], True),
                                  ('broken.py', [64, 64], False),
                                  ('broken.py', [64, 64], True),
                                  ('toy.py', [64, 96], False),
                                  ('toy.py', [64, 96], True),
                                  ('broken.py', [64, 96], False),
                                  ('broken.py', [64, 96], True)]
    for r in results:
        if r['model'] == 'broken.py':
            assert r['status'].startswith('failed: ')
            assert 'must divide' in r['status']
            continue
        assert r['status'] == 'ok'
        assert r['mode'] == 'train' and r['dtype'] == 'fp32'
        assert r['latency_ms'] > 0 and r['peak_mem_mb'] >= 0
        assert r['gemm_gflops'] > 0
        # Forward + backward: about three times the forward MACs.
        assert 0.01 < r['gmacs'] < 1
        assert r['gflops'] == pytest.approx(2 * r['gmacs'] /
                                            (r['latency_ms'] / 1e3))
        # The fraction of the GEMM rate: fastest run over fastest GEMM.
        assert 0 < r['best_latency_ms'] <= r['latency_ms']
        assert r['gemm_fraction'] == pytest.approx(
            2 * r['gmacs'] / (r['best_latency_ms'] / 1e3) / r['gemm_gflops'])
    # Checkpointing recomputes the forward: more MACs, same model.
    plain, checkpointed = results[0]['gmacs'], results[1]['gmacs']
    assert checkpointed > plain * 1.1
    markdown = (tmp_path / 'out' / 'bench.md').read_text()
    assert markdown.count('| toy.py |') == 4
    assert markdown.count('| broken.py |') == 4
    assert 'pixels x1.50' in markdown
    for key in ('latency_ms', 'peak_mem_mb'):
        assert (tmp_path / 'out' / f'bench_{key}.png').stat().st_size > 1000
    printed = capsys.readouterr().out
    assert 'failed: ' in printed and 'scaling between consecutive' in printed


def test_onnxruntime_timed_beside_pytorch(tmp_path, monkeypatch):
    (tmp_path / 'toy_backbones.py').write_text(TOY_MODULE)
    (tmp_path / 'toy.py').write_text(TOY_CONFIG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('PYTHONPATH', str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path))
    prefix = tmp_path / 'bench'
    benchmark.main([
        '--models', 'toy.py', '--shape', '64', '96', '--backend', 'pytorch',
        'onnxruntime', '--threads', '1', '--warmup', '1', '--repeats', '2',
        '--out',
        str(prefix)
    ])
    pytorch, onnxruntime = json.loads((tmp_path / 'bench.json').read_text())
    assert (pytorch['backend'], onnxruntime['backend']) == ('pytorch',
                                                            'onnxruntime')
    assert onnxruntime['status'] == 'ok' and onnxruntime['latency_ms'] > 0
    # The same model, counted in PyTorch; onnxruntime's memory unmeasured.
    assert onnxruntime['gmacs'] == pytorch['gmacs'] > 0
    assert onnxruntime['peak_mem_mb'] is None
    markdown = (tmp_path / 'bench.md').read_text()
    assert '| toy.py | 64x96 | onnxruntime | infer |' in markdown
    speedup = pytorch['latency_ms'] / onnxruntime['latency_ms']
    assert f'64x96  {speedup:5.2f}x as fast' in markdown


def test_backend_ratios_pair_onnxruntime_with_pytorch_rows():
    results = [
        row('ours', (224, 224), 50., 100.),
        row('ours', (224, 224), 25., None, backend='onnxruntime'),
        row('ours', (512, 512), 10., None, backend='onnxruntime'),
        row('theirs', (224, 224), 40., 100., backend='onnxruntime'),
    ]
    assert [(r['model'], r['size'], speed)
            for r, speed in benchmark.backend_ratios(results)
            ] == [('ours', [224, 224], 2.)]
    # Unmeasured memory: no ratio, a dash in the tables.
    assert benchmark.memory_ratio(results[1], results[0]) is None
    timed = dict(results[1], gmacs=1., gflops=80., gemm_fraction=0.5)
    assert '| 25.0 | - | 1.00 | 50% |' in benchmark.markdown_table([timed])[2]
    assert '      25.0         -' in benchmark.format_row(timed)


def test_baseline_ratios_pair_rows_of_the_same_size_and_variant():
    results = [
        row('ours', (224, 224), 50., 100.),
        row('theirs', (224, 224), 100., 50.),
        row('ours', (224, 224), 40., 100., dtype='bf16'),
        row('ours', (512, 512), 10., 10.),  # no baseline row at 512
        dict(row('theirs', (1024, 1024), 1., 1.), status='failed: x'),
        row('ours', (1024, 1024), 1., 1.),
    ]
    ratios = benchmark.baseline_ratios(results, 'theirs')
    assert [(r['model'], r['size'], speed, memory)
            for r, speed, memory in ratios] == [('ours', [224, 224], 2., 2.)]


def test_scaling_ratios_follow_pixels_within_each_variant():
    results = [
        row('ours', (2048, 2048), 900., 430.),
        row('ours', (1024, 1024), 200., 100.),
        row('ours', (512, 768), 150., 80.),
        row('ours', (1024, 1024), 100., 100., dtype='bf16'),
    ]
    ratios = [(small['size'], large['size'], round(pixels, 3),
               round(time_ratio, 3), round(memory, 3)) for small, large,
              pixels, time_ratio, memory in benchmark.scaling_ratios(results)]
    assert ratios == [
        ([512, 768], [1024, 1024], round(1024 / 768 * 2,
                                         3), round(200 / 150, 3), 1.25),
        ([1024, 1024], [2048, 2048], 4.0, 4.5, 4.3),
    ]


def test_median_round_takes_the_middle_latency_and_best_runs():

    def run(latency, best, gemm):
        return dict(
            status='ok',
            latency_ms=latency,
            best_latency_ms=best,
            gmacs=1.,
            gflops=2e3 / latency,
            gemm_gflops=gemm)

    failed = dict(status='failed: out of memory or killed (rc -9)')
    merged = benchmark.median_round(
        [run(30., 25., 100.), failed,
         run(10., 9., 90.),
         run(20., 12., 120.)])
    assert merged['latency_ms'] == 20.
    assert merged['round_latencies_ms'] == [30., 10., 20.]
    # The fastest run (9 ms: 222 GFLOP/s) over the fastest GEMM.
    assert merged['best_latency_ms'] == 9.
    assert merged['gemm_gflops'] == 120.
    assert merged['gemm_fraction'] == pytest.approx(2e3 / 9. / 120.)
    assert benchmark.median_round([failed, failed]) is failed


def test_rounds_take_turns_and_report_one_row(tmp_path, monkeypatch):
    calls = []

    def fake_measure(spec, timeout):
        calls.append(spec['model'])
        latency = 10. * len(calls)
        return dict(
            spec,
            status='ok',
            latency_ms=latency,
            peak_mem_mb=1.,
            gmacs=1.,
            best_latency_ms=latency,
            gflops=2e3 / latency,
            gemm_gflops=100.,
            gemm_fraction=2e3 / latency / 100.)

    monkeypatch.setattr(benchmark, 'measure', fake_measure)
    benchmark.main([
        '--models', 'l2vit-t', 'swin-t', '--shape', '224', '--rounds', '3',
        '--out',
        str(tmp_path / 'bench')
    ])
    assert calls == ['l2vit-t', 'swin-t'] * 3
    results = json.loads((tmp_path / 'bench.json').read_text())
    assert [(r['model'], r['latency_ms'])
            for r in results] == [('l2vit-t', 30.), ('swin-t', 40.)]


@pytest.mark.parametrize('argv,message', [
    (['--models', 'no-such-model'],
     "unknown model 'no-such-model': 'no-such-model' is not a registered"),
    (['--models', 'swin-t:small'], "'swin-t' is not a registered backbone"),
    (['--models', 'mmdet.SwinTransformer:small'],
     "mmdet.SwinTransformer archs known here: tiny; got 'small'"),
    (['--models', 'missing.py'], "config file 'missing.py' does not exist"),
    (['--models', 'l2vit-t', '--baseline', 'swin-t'
      ], '--baseline swin-t is not one of --models'),
    (['--shape', '224', 'abc'], "--shape takes H or H W in pixels, got 'abc'"),
    (['--shape', '224', '--shape', '1', '2', '3'],
     '--shape takes H (square) or H W, got [1, 2, 3]'),
    (['--rounds', '0'], '--rounds must be at least 1, got 0'),
    (['--backend', 'onnxruntime', '--mode', 'train'
      ], '--backend onnxruntime times fp32 inference on the CPU'),
])
def test_bad_arguments_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(argv)
    assert message in capsys.readouterr().err


def test_models_are_named_as_in_every_tool():
    args = benchmark.parse_args([
        '--models', 'l2vit-t', 'FLattenSwin:tiny', 'pvt-t', '--shape', '224',
        '--shape', '800', '1344'
    ])
    assert args.models == ['l2vit-t', 'FLattenSwin:tiny', 'pvt-t']
    assert args.shape == [(224, 224), (800, 1344)]
    assert benchmark.parse_args([]).shape == benchmark.DEFAULT_SHAPES


@pytest.mark.parametrize('name', ['pvt-t', 'swin-t', 'l2vit-t'])
def test_baselines_without_checkpointing_build(name):
    # mmdet's PVT takes no ``with_cp``: it is passed only when wanted.
    backbone = benchmark._build_backbone(name, 'cpu')
    assert backbone.training is False


@pytest.mark.parametrize('allocator', ['system', 'caching'])
def test_caching_allocator_is_set_for_the_workers_only(allocator, monkeypatch):
    for name in benchmark.CACHING_ALLOCATOR_ENV:
        monkeypatch.delenv(name, raising=False)
    seen = {}

    def run(cmd, env, **kwargs):
        seen.update(env)
        return benchmark.subprocess.CompletedProcess(cmd, 1, '', 'boom')

    monkeypatch.setattr(benchmark.subprocess, 'run', run)
    result = benchmark.measure(dict(model='l2vit-t', allocator=allocator), 60)
    assert result['status'] == 'failed: boom'
    caching = {
        name: seen.get(name)
        for name in benchmark.CACHING_ALLOCATOR_ENV
    }
    if allocator == 'caching':
        assert caching == benchmark.CACHING_ALLOCATOR_ENV
        # Above any tensor: nothing is mapped (and unmapped) on its own.
        assert int(caching['MALLOC_MMAP_THRESHOLD_']) >= 2**32
    else:
        assert set(caching.values()) == {None}
    assert not any(name in benchmark.os.environ
                   for name in benchmark.CACHING_ALLOCATOR_ENV)


def test_detector_step_gives_every_backbone_the_same_proposals():
    # An untrained RPN proposes from the random features, so the heads'
    # work (RoIAlign's samples, the mask head's positives) would follow the
    # backbone; the benchmark's RPN starts at zero to make it the same.
    proposals = {}
    for name in ('l2vit-t', 'swin-t'):
        model, step = benchmark._build_detector_step(name, (128, 160), 'cpu',
                                                     False)
        roi_loss = model.roi_head.loss

        def record(x, rpn_results, data_samples, name=name):
            proposals[name] = [result.bboxes for result in rpn_results]
            return roi_loss(x, rpn_results, data_samples)

        model.roi_head.loss = record
        step()
    ours, swins = proposals['l2vit-t'], proposals['swin-t']
    assert len(ours) == 2 and len(ours[0]) > 100
    for image_ours, image_swins in zip(ours, swins):
        assert torch.equal(image_ours, image_swins)


@pytest.mark.parametrize('denormals,supported', [('keep', True),
                                                 ('flush', True),
                                                 ('flush', False)])
def test_workers_flush_denormals_only_when_asked(denormals, supported,
                                                 monkeypatch):
    calls = []

    def set_flush_denormal(mode):
        calls.append(mode)
        return supported

    def build(*args):
        raise KeyboardInterrupt  # stop the worker once it builds a model

    monkeypatch.setattr(torch, 'set_flush_denormal', set_flush_denormal)
    # Nothing of the worker's set-up may stay with this test process.
    monkeypatch.setattr(torch, 'set_num_threads', lambda threads: None)
    monkeypatch.setattr(benchmark, '_gemm_gflops', lambda device: 1.0)
    monkeypatch.setattr(benchmark, '_build_backbone', build)
    spec = dict(
        model='l2vit-t',
        size=[64, 64],
        mode='train',
        dtype='fp32',
        device='cpu',
        threads=1,
        with_cp=False,
        denormals=denormals)
    if not supported:
        with pytest.raises(RuntimeError, match='cannot flush denormals'):
            benchmark.run_worker(spec)
    else:
        with pytest.raises(KeyboardInterrupt):
            benchmark.run_worker(spec)
    assert calls == ([True] if denormals == 'flush' else [])
