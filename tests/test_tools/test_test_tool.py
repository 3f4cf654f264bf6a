# Copyright (c) OpenMMLab. All rights reserved.
"""``tools/test.py --out / --show / --show-dir / --tta`` and URL checkpoints
on the demo detection (Mask R-CNN, mmdet) and segmentation (UPerNet, mmseg)
configs: a tiny L²ViT, three 96x96 validation scenes (the configs resize
them to 128, so every output must come back at 96x96) and a checkpoint of
the freshly built model. The tool runs in this process through its
``main(argv)``."""
import glob
import importlib.util
import itertools
import json
import os.path as osp
import pickle

import mmcv
import numpy as np
import pytest
import torch
from http_serving import serve_directory
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmengine.visualization import Visualizer

from mmplugin_l2vit import L2ViT
from mmplugin_l2vit.datasets import SHAPE_CLASSES, generate_demo_data

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_CONFIG = osp.join(REPO, 'configs', 'demo',
                      'mask-rcnn_l2vit-demo_shapes.py')
SEG_CONFIG = osp.join(REPO, 'configs', 'demo', 'upernet_l2vit-demo_shapes.py')
NUM_VAL = 3
SIZE = 96
VAL_NAMES = [f'{i:06d}' for i in range(NUM_VAL)]
TINY = {'model.backbone.arch.depths': [1, 1, 1, 1]}
_runs = itertools.count()


def load_tool():
    spec = importlib.util.spec_from_file_location(
        'l2vit_tools_test', osp.join(REPO, 'tools', 'test.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TOOL = load_tool()


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo_data'))
    generate_demo_data(root, num_train=1, num_val=NUM_VAL, size=SIZE)
    return root


def save_fresh_checkpoint(config, scope, path):
    """The tiny model built from ``config``, untrained, as a checkpoint."""
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(TINY)
    init_default_scope(scope)
    registry = importlib.import_module(f'{scope}.registry')
    torch.manual_seed(0)
    model = registry.MODELS.build(cfg.model)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    return path


@pytest.fixture(scope='module')
def det_checkpoint(tmp_path_factory):
    return save_fresh_checkpoint(
        DET_CONFIG, 'mmdet',
        str(tmp_path_factory.mktemp('ckpt') / 'mask-rcnn.pth'))


@pytest.fixture(scope='module')
def seg_checkpoint(tmp_path_factory):
    return save_fresh_checkpoint(
        SEG_CONFIG, 'mmseg',
        str(tmp_path_factory.mktemp('ckpt') / 'upernet.pth'))


def det_ann_file(data_root):
    return osp.join(data_root, 'coco', 'annotations', 'instances_val.json')


def det_options(data_root):
    coco = osp.join(data_root, 'coco') + osp.sep
    return [
        f'test_dataloader.dataset.data_root={coco}',
        f'test_evaluator.ann_file={det_ann_file(data_root)}'
    ]


def seg_options(data_root):
    ade = osp.join(data_root, 'ade') + osp.sep
    # All three: some hooks read the training set's metadata too.
    return [
        f'{split}_dataloader.dataset.data_root={ade}'
        for split in ('train', 'val', 'test')
    ]


def run_tool(config, checkpoint, work_dir, *args, options=()):
    """``python tools/test.py`` in this process. Every run gets its own
    experiment and visualizer names, as a fresh process would: mmengine
    hands back an existing instance of the same name."""
    name = f'test_tool_{next(_runs)}'
    TOOL.main([
        config, checkpoint, '--work-dir',
        str(work_dir), *args, '--cfg-options',
        'model.backbone.arch.depths=[1,1,1,1]', f'experiment_name={name}',
        f'visualizer.name={name}', *options
    ])


def logged_metrics(work_dir):
    """The metrics the test run logged under ``work_dir``."""
    logs = glob.glob(osp.join(str(work_dir), '*', '*.json'))
    assert len(logs) == 1, logs
    with open(logs[0]) as f:
        return json.loads(f.readlines()[-1])


def run_det(checkpoint, data_root, work_dir, *args, config=DET_CONFIG):
    options = det_options(data_root)
    run_tool(config, checkpoint, work_dir, *args, options=options)


def run_seg(checkpoint, data_root, work_dir, *args):
    options = seg_options(data_root)
    run_tool(SEG_CONFIG, checkpoint, work_dir, *args, options=options)


@pytest.fixture
def spy(monkeypatch):
    """Records the model the runner tests and every backbone input."""
    seen = dict(models=[], inputs=[])
    test, forward = Runner.test, L2ViT.forward

    def spy_test(runner):
        seen['models'].append(runner.model)
        return test(runner)

    def spy_forward(backbone, x):
        seen['inputs'].append(x.detach().clone())
        return forward(backbone, x)

    monkeypatch.setattr(Runner, 'test', spy_test)
    monkeypatch.setattr(L2ViT, 'forward', spy_forward)
    return seen


def source_image(data_root, dataset, name):
    folder = ('coco/val' if dataset == 'coco' else 'ade/images/validation')
    return mmcv.imread(osp.join(data_root, folder, name + '.jpg'))


def assert_drawn(drawn, source):
    """``drawn`` is the ground truth and the prediction side by side, each
    the size of the source image, and both halves are drawn over."""
    assert drawn.shape == (SIZE, 2 * SIZE, 3)
    for half in (drawn[:, :SIZE], drawn[:, SIZE:]):
        changed = np.abs(half.astype(int) - source).max(-1) > 40
        assert changed.mean() > 0.02


# --out ---------------------------------------------------------------------


def test_det_out_dumps_one_prediction_per_image(data_root, det_checkpoint,
                                                tmp_path, monkeypatch):
    from mmdet.evaluation import CocoMetric
    from pycocotools import mask as mask_util

    # What the COCO metric of the run is given to score, per image.
    scored = {}
    process = CocoMetric.process

    def spy_process(metric, data_batch, data_samples):
        for sample in data_samples:
            scored[sample['img_id']] = {
                k: v.clone()
                for k, v in sample['pred_instances'].items()
            }
        return process(metric, data_batch, data_samples)

    monkeypatch.setattr(CocoMetric, 'process', spy_process)
    out = str(tmp_path / 'preds.pkl')
    run_det(det_checkpoint, data_root, tmp_path / 'work', '--out', out)
    monkeypatch.undo()
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert isinstance(preds, list) and len(preds) == NUM_VAL
    assert sorted(osp.basename(p['img_path'])
                  for p in preds) == [n + '.jpg' for n in VAL_NAMES]
    total = 0
    for pred in preds:
        assert 'gt_instances' not in pred
        assert tuple(pred['ori_shape']) == (SIZE, SIZE)
        inst = pred['pred_instances']
        assert {'bboxes', 'scores', 'labels', 'masks'} <= set(inst)
        num = len(inst['scores'])
        # The demo config's test_cfg: at most 20 detections, score >= 0.05.
        assert num <= 20
        assert inst['bboxes'].shape == (num, 4)
        assert (inst['bboxes'] >= 0).all() and (inst['bboxes'] <= SIZE).all()
        assert ((inst['scores'] >= 0.05) & (inst['scores'] <= 1)).all()
        assert set(inst['labels'].tolist()) <= set(range(len(SHAPE_CLASSES)))
        # Masks are RLE-encoded, one per box, at the original image size.
        assert len(inst['masks']) == num
        assert all(m['size'] == [SIZE, SIZE] for m in inst['masks'])
        total += num
        # They are exactly the predictions that were scored.
        ref = scored[pred['img_id']]
        for key in ('bboxes', 'scores', 'labels'):
            assert torch.equal(inst[key], ref[key]), key
        assert np.array_equal(
            mask_util.decode(inst['masks']).transpose(2, 0, 1),
            ref['masks'].numpy())
    assert total > 0, 'no detections: the checks above were vacuous'
    assert sorted(scored) == sorted(p['img_id'] for p in preds)

    # The file feeds mmdet's offline evaluation, which gives the metrics
    # the tool logged.
    metric = CocoMetric(
        ann_file=det_ann_file(data_root), metric=['bbox', 'segm'])
    evaluator = Evaluator(metric)
    evaluator.dataset_meta = dict(classes=SHAPE_CLASSES)
    offline = evaluator.offline_evaluate(preds)
    logged = logged_metrics(tmp_path / 'work')
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'):
        assert offline[key] == pytest.approx(logged[key], abs=1e-3), key


def test_det_out_rejects_other_suffixes(data_root, det_checkpoint, tmp_path):
    out = str(tmp_path / 'preds.json')
    with pytest.raises(
            SystemExit, match=r'^--out must be a \.pkl or \.pickle file$'):
        run_det(det_checkpoint, data_root, tmp_path / 'work', '--out', out)
    assert not osp.exists(out)


def test_seg_out_writes_label_maps(data_root, seg_checkpoint, tmp_path):
    out = tmp_path / 'label_maps'
    run_seg(seg_checkpoint, data_root, tmp_path / 'work', '--out', str(out))
    names = sorted(p.name for p in out.iterdir())
    assert names == [n + '.png' for n in VAL_NAMES]
    correct = labelled = 0
    for name in VAL_NAMES:
        label_map = mmcv.imread(str(out / (name + '.png')), 'unchanged')
        assert label_map.shape == (SIZE, SIZE)
        # reduce_zero_label: the classes 0..3 are written back as the
        # annotation values 1..4 (0 is the ignored background).
        assert label_map.min() >= 1
        assert label_map.max() <= len(SHAPE_CLASSES)
        gt = mmcv.imread(
            osp.join(data_root, 'ade', 'annotations', 'validation',
                     name + '.png'), 'unchanged')
        correct += ((label_map == gt) & (gt > 0)).sum()
        labelled += (gt > 0).sum()
    # They are the maps that were scored: their pixel accuracy is aAcc.
    logged = logged_metrics(tmp_path / 'work')
    assert 100 * correct / labelled == pytest.approx(logged['aAcc'], abs=0.01)


# --show-dir ----------------------------------------------------------------


def test_det_show_dir_draws_every_image(data_root, det_checkpoint, tmp_path):
    work_dir = tmp_path / 'work'
    run_det(det_checkpoint, data_root, work_dir, '--show-dir', 'shown')
    # A relative --show-dir lands in the run's folder of the work dir.
    drawn = sorted(glob.glob(osp.join(str(work_dir), '*', 'shown', '*')))
    assert [osp.basename(p) for p in drawn] == [n + '.jpg' for n in VAL_NAMES]
    for path, name in zip(drawn, VAL_NAMES):
        drawn_image = mmcv.imread(path)
        source = source_image(data_root, 'coco', name)
        assert_drawn(drawn_image, source)
        # Boxes and masks are drawn over this very image, in its colours:
        # away from the ground truth shapes it is left as it was.
        gt_half = drawn_image[:, :SIZE].astype(int)
        assert np.median(np.abs(gt_half - source).max(-1)) < 8


def test_seg_show_dir_draws_every_image(data_root, seg_checkpoint, tmp_path):
    work_dir = tmp_path / 'work'
    run_seg(seg_checkpoint, data_root, work_dir, '--show-dir', 'shown')
    drawn = sorted(
        glob.glob(
            osp.join(str(work_dir), 'shown', 'vis_data', 'vis_image', '*')))
    assert [osp.basename(p)
            for p in drawn] == [f'test_{n}.jpg_0.png' for n in VAL_NAMES]
    for path, name in zip(drawn, VAL_NAMES):
        assert_drawn(mmcv.imread(path), source_image(data_root, 'ade', name))
    # The metrics are still logged in the work dir.
    assert 'mIoU' in logged_metrics(work_dir)


def pretrain_test_config(tmp_path, *args):
    """The config tools/test.py makes of an ImageNet config with ``args``."""
    checkpoint = tmp_path / 'model.pth'
    checkpoint.touch()
    return TOOL.build_config(
        TOOL.parse_args([
            osp.join(REPO, 'configs', 'flatten',
                     'flatten-pvt-tiny_8xb128_in1k.py'),
            str(checkpoint), '--work-dir',
            str(tmp_path), *args
        ]))


def test_pretrain_show_dir_enables_the_hook(tmp_path):
    """mmpretrain's VisualizationHook is switched on by ``enable`` and saves
    to ``out_dir`` (it has no mmdet-style ``draw``/``test_out_dir``)."""
    cfg = pretrain_test_config(tmp_path, '--show-dir', 'shown')
    assert cfg.default_scope == 'mmpretrain'
    hook_cfg = cfg.default_hooks.visualization.to_dict()
    hook_cfg.pop('_scope_', None)
    assert hook_cfg == dict(
        type='VisualizationHook',
        enable=True,
        interval=1,
        out_dir=osp.join(str(tmp_path), 'shown'))
    from mmpretrain.registry import HOOKS
    Visualizer.get_instance(f'test_tool_{next(_runs)}')
    hook = HOOKS.build(hook_cfg)
    assert hook.enable is True and hook.interval == 1
    assert set(hook.draw_args) == {'show'}


# --show --------------------------------------------------------------------


@pytest.fixture
def shown(monkeypatch):
    """Records ``(image shape, wait_time)`` of every image a visualizer
    shows, instead of opening a window."""
    calls = []

    def record(visualizer, image, win_name='image', wait_time=0., **kwargs):
        calls.append((image.shape, wait_time))

    monkeypatch.setattr(Visualizer, 'show', record)
    return calls


def test_det_show_shows_every_image_for_wait_time(data_root, det_checkpoint,
                                                  tmp_path, shown):
    run_det(det_checkpoint, data_root, tmp_path / 'work', '--show',
            '--wait-time', '0.5')
    # Ground truth and prediction side by side, one window per image.
    assert shown == [((SIZE, 2 * SIZE, 3), 0.5)] * NUM_VAL


def test_seg_show_shows_every_image_for_wait_time(data_root, seg_checkpoint,
                                                  tmp_path, shown):
    run_seg(seg_checkpoint, data_root, tmp_path / 'work', '--show',
            '--wait-time', '0.25')
    assert shown == [((SIZE, 2 * SIZE, 3), 0.25)] * NUM_VAL


def test_pretrain_show_sets_show_and_wait_time(tmp_path):
    cfg = pretrain_test_config(tmp_path, '--show')
    hook_cfg = cfg.default_hooks.visualization
    assert (hook_cfg.enable, hook_cfg.interval) == (True, 1)
    # mmdet's default wait time.
    assert (hook_cfg.show, hook_cfg.wait_time) == (True, 2)
    assert 'out_dir' not in hook_cfg


# URL checkpoints -----------------------------------------------------------


def test_det_url_checkpoint_is_downloaded_and_loaded(data_root, det_checkpoint,
                                                     tmp_path, spy,
                                                     monkeypatch):
    served = tmp_path / 'served'
    served.mkdir()
    checkpoint = torch.load(det_checkpoint)
    # A value no freshly built model has: the run must have loaded these.
    checkpoint['state_dict']['backbone.norm0.weight'].fill_(0.125)
    torch.save(checkpoint, served / 'mask-rcnn.pth')
    torch_home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    with serve_directory(served) as base_url:
        run_det(f'{base_url}/mask-rcnn.pth', data_root, tmp_path / 'work')
    cached = torch_home / 'hub' / 'checkpoints' / 'mask-rcnn.pth'
    assert cached.read_bytes() == (served / 'mask-rcnn.pth').read_bytes()
    (model, ) = spy['models']
    state = model.state_dict()
    for key, value in checkpoint['state_dict'].items():
        assert torch.equal(state[key], value), key
    assert 'coco/bbox_mAP' in logged_metrics(tmp_path / 'work')


def test_missing_local_checkpoint_exits_with_message(tmp_path):
    missing = str(tmp_path / 'missing.pth')
    with pytest.raises(SystemExit, match='no checkpoint at .*missing.pth'):
        TOOL.build_config(TOOL.parse_args([DET_CONFIG, missing]))


# --tta ---------------------------------------------------------------------


def test_tta_without_tta_model_exits_with_message(data_root, det_checkpoint,
                                                  tmp_path, spy):
    # The mmdet demo config and its bases define no tta_model/tta_pipeline.
    assert 'tta_model' not in Config.fromfile(DET_CONFIG)
    with pytest.raises(
            SystemExit,
            match=r'^--tta needs tta_model and tta_pipeline in the config$'):
        run_det(det_checkpoint, data_root, tmp_path / 'work', '--tta')
    assert spy['models'] == [] and spy['inputs'] == []


def test_det_tta_with_mask_head_is_refused_before_running(
        data_root, det_checkpoint, tmp_path, spy):
    config = tmp_path / 'mask_tta.py'
    config.write_text(f"""
_base_ = [{DET_CONFIG!r}]
tta_model = dict(type='DetTTAModel')
tta_pipeline = [dict(type='LoadImageFromFile')]
""")
    with pytest.raises(
            SystemExit, match='does not support a model with a '
            'mask head$'):
        run_det(
            det_checkpoint,
            data_root,
            tmp_path / 'work',
            '--tta',
            config=str(config))
    assert spy['models'] == [] and spy['inputs'] == []


def assert_flipped_pairs(inputs):
    for plain, flipped in zip(inputs[::2], inputs[1::2]):
        assert torch.equal(flipped, plain.flip(-1))


def test_det_tta_runs_flipped_views_through_tta_model(data_root,
                                                      det_checkpoint, tmp_path,
                                                      spy):
    # mmdet's DetTTAModel merges boxes only (it asserts on masks), so the
    # derived config drops the mask branch.
    config = tmp_path / 'faster_tta.py'
    config.write_text(f"""
_base_ = [{DET_CONFIG!r}]
model = dict(roi_head=dict(mask_roi_extractor=None, mask_head=None))
test_evaluator = dict(metric='bbox')
tta_model = dict(
    type='DetTTAModel',
    tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=20))
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(128, 128), keep_ratio=True)],
            [dict(type='RandomFlip', prob=0.),
             dict(type='RandomFlip', prob=1.)],
            [dict(
                type='PackDetInputs',
                meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape',
                           'scale_factor', 'flip', 'flip_direction'))],
        ])
]
""")
    out = str(tmp_path / 'preds.pkl')
    work_dir = tmp_path / 'work'
    args = ['--tta', '--out', out]
    run_det(det_checkpoint, data_root, work_dir, *args, config=str(config))
    (model, ) = spy['models']
    assert type(model).__name__ == 'DetTTAModel'
    assert type(model.module).__name__ == 'MaskRCNN'
    # One batch of 3 images, seen plain and horizontally flipped.
    shapes = [tuple(x.shape) for x in spy['inputs']]
    assert shapes == [(NUM_VAL, 3, 128, 128)] * 2
    assert_flipped_pairs(spy['inputs'])
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == NUM_VAL
    for pred in preds:
        inst = pred['pred_instances']
        assert len(inst['scores']) <= 20 and 'masks' not in inst
        assert (inst['bboxes'] >= 0).all() and (inst['bboxes'] <= SIZE).all()
    assert 'coco/bbox_mAP' in logged_metrics(work_dir)


def test_seg_tta_uses_inherited_multiscale_flip(data_root, seg_checkpoint,
                                                tmp_path, spy):
    # The seg demo config inherits tta_model (mmseg default_runtime) and
    # tta_pipeline (mmseg ade20k: 6 scales x 2 flips) from its bases.
    cfg = Config.fromfile(SEG_CONFIG)
    assert cfg.tta_model.type == 'SegTTAModel' and 'tta_pipeline' in cfg
    out = tmp_path / 'label_maps'
    run_seg(seg_checkpoint, data_root, tmp_path / 'work', '--tta', '--out',
            str(out))
    (model, ) = spy['models']
    assert type(model).__name__ == 'SegTTAModel'
    assert type(model.module).__name__ == 'EncoderDecoder'
    sizes = [int(SIZE * r) for r in (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)]
    shapes = [tuple(x.shape) for x in spy['inputs']]
    assert shapes == [(NUM_VAL, 3, s, s) for s in sizes for _ in range(2)]
    assert_flipped_pairs(spy['inputs'])
    # The merged predictions are dumped at the original size and scored.
    for name in VAL_NAMES:
        label_map = mmcv.imread(str(out / (name + '.png')), 'unchanged')
        assert label_map.shape == (SIZE, SIZE)
        assert 1 <= label_map.min() and label_map.max() <= len(SHAPE_CLASSES)
    assert 'mIoU' in logged_metrics(tmp_path / 'work')
