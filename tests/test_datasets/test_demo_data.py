# Copyright (c) OpenMMLab. All rights reserved.
"""The synthetic shapes datasets: deterministic, self-consistent, loadable
by mmdet, mmseg and mmpretrain with the demo configs, and trainable for a
few iterations."""
import glob
import importlib.util
import json
import os.path as osp

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from mmplugin_l2vit.datasets import (DEFAULT_SIZE, SHAPE_CLASSES,
                                     SHAPE_PALETTE, generate_demo_data)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_CONFIG = osp.join(REPO, 'configs', 'demo',
                      'mask-rcnn_l2vit-demo_shapes.py')
SEG_CONFIG = osp.join(REPO, 'configs', 'demo', 'upernet_l2vit-demo_shapes.py')
CLS_CONFIG = osp.join(REPO, 'configs', 'demo', 'l2vit-demo_1xb32_shapes.py')
SPLITS = dict(train='training', val='validation')
NUM_IMAGES = dict(train=6, val=3)
SIZE = DEFAULT_SIZE


def load_run_demo():
    spec = importlib.util.spec_from_file_location(
        'run_demo', osp.join(REPO, 'tools', 'misc', 'run_demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('demo_data'))
    generate_demo_data(
        root,
        seed=3,
        num_train=NUM_IMAGES['train'],
        num_val=NUM_IMAGES['val'],
        size=SIZE)
    return root


def read_tree(root):
    files = {}
    for path in sorted(glob.glob(osp.join(root, '**', '*'), recursive=True)):
        if osp.isfile(path):
            with open(path, 'rb') as f:
                files[osp.relpath(path, root)] = f.read()
    return files


def read_coco(data_root, split):
    with open(osp.join(data_root, 'coco', 'annotations',
                       f'instances_{split}.json')) as f:
        return json.load(f)


def test_generation_is_deterministic(data_root, tmp_path):
    generate_demo_data(
        str(tmp_path / 'same'),
        seed=3,
        num_train=NUM_IMAGES['train'],
        num_val=NUM_IMAGES['val'],
        size=SIZE)
    first, second = read_tree(data_root), read_tree(str(tmp_path / 'same'))
    # 2 splits x (COCO jpg + ADE jpg + ADE png + ImageNet JPEG) + 2 COCO
    # json + 2 ImageNet lists.
    assert len(first) == 4 * sum(NUM_IMAGES.values()) + 4
    assert first == second

    generate_demo_data(
        str(tmp_path / 'other'),
        seed=4,
        num_train=NUM_IMAGES['train'],
        num_val=NUM_IMAGES['val'],
        size=SIZE)
    other = read_tree(str(tmp_path / 'other'))
    assert other.keys() == first.keys()
    assert other['coco/annotations/instances_val.json'] != \
        first['coco/annotations/instances_val.json']

    # A scene depends on its split and index only, not on the split sizes.
    generate_demo_data(
        str(tmp_path / 'more'), seed=3, num_train=8, num_val=1, size=SIZE)
    more = read_tree(str(tmp_path / 'more'))
    assert more['coco/val/000000.jpg'] == first['coco/val/000000.jpg']
    assert more['coco/train/000005.jpg'] == first['coco/train/000005.jpg']


def test_rejects_tiny_images(tmp_path):
    with pytest.raises(ValueError, match='at least 32'):
        generate_demo_data(str(tmp_path), size=16)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_coco_annotations(data_root, split):
    coco = COCO(
        osp.join(data_root, 'coco', 'annotations', f'instances_{split}.json'))
    categories = coco.loadCats(coco.getCatIds())
    assert [(c['id'], c['name']) for c in categories] == \
        list(enumerate(SHAPE_CLASSES, start=1))
    image_ids = coco.getImgIds()
    assert sorted(image_ids) == list(range(1, NUM_IMAGES[split] + 1))
    assert len(set(coco.getAnnIds())) == len(coco.dataset['annotations'])

    for image_id in image_ids:
        info = coco.loadImgs(image_id)[0]
        assert (info['height'], info['width']) == (SIZE, SIZE)
        image = cv2.imread(osp.join(data_root, 'coco', split,
                                    info['file_name']))
        assert image.shape == (SIZE, SIZE, 3)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        assert len(anns) >= 1
        covered = np.zeros((SIZE, SIZE), bool)
        for ann in anns:
            assert ann['iscrowd'] == 0
            assert 1 <= ann['category_id'] <= len(SHAPE_CLASSES)
            mask = coco.annToMask(ann).astype(bool)
            assert mask.shape == (SIZE, SIZE)
            assert ann['area'] == mask.sum() > 0
            # Visible parts of different shapes never overlap.
            assert not (covered & mask).any()
            covered |= mask
            ys, xs = np.nonzero(mask)
            x, y, w, h = ann['bbox']
            assert [x, y, w, h] == [
                xs.min(), ys.min(), xs.max() - xs.min() + 1,
                ys.max() - ys.min() + 1
            ]
            assert x >= 0 and y >= 0 and x + w <= SIZE and y + h <= SIZE


def test_scenes_have_occlusion_and_several_classes(data_root):
    coco = read_coco(data_root, 'train')
    assert {a['category_id'] for a in coco['annotations']} == \
        set(range(1, len(SHAPE_CLASSES) + 1))
    per_image = {}
    for ann in coco['annotations']:
        per_image.setdefault(ann['image_id'], []).append(ann)
    assert max(len(anns) for anns in per_image.values()) >= 3

    def boxes_overlap(a, b):
        ax, ay, aw, ah = a['bbox']
        bx, by, bw, bh = b['bbox']
        return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah

    assert any(
        boxes_overlap(a, b) for anns in per_image.values() for a in anns
        for b in anns if a['id'] < b['id'])


@pytest.mark.parametrize('split', ['train', 'val'])
def test_ade_labels_match_coco_masks(data_root, split):
    coco = read_coco(data_root, split)
    ade_root = osp.join(data_root, 'ade')
    labels = {}
    for image in coco['images']:
        name = osp.splitext(image['file_name'])[0]
        label = cv2.imread(
            osp.join(ade_root, 'annotations', SPLITS[split], name + '.png'),
            cv2.IMREAD_UNCHANGED)
        assert label.dtype == np.uint8 and label.shape == (SIZE, SIZE)
        assert set(np.unique(label)) <= set(range(len(SHAPE_CLASSES) + 1))
        labels[image['id']] = label
        # The same pixels in both layouts.
        for directory in (osp.join(data_root, 'coco', split),
                          osp.join(ade_root, 'images', SPLITS[split])):
            with open(osp.join(directory, name + '.jpg'), 'rb') as f:
                assert f.read()[:2] == b'\xff\xd8'
    expected = {i: np.zeros((SIZE, SIZE), np.uint8) for i in labels}
    for ann in coco['annotations']:
        mask = mask_utils.decode(ann['segmentation']).astype(bool)
        expected[ann['image_id']][mask] = ann['category_id']
    for image_id, label in labels.items():
        np.testing.assert_array_equal(label, expected[image_id])
    assert any((label == 0).any() for label in labels.values())


def test_configs_match_the_generator():
    for config in (DET_CONFIG, SEG_CONFIG, CLS_CONFIG):
        cfg = Config.fromfile(config)
        assert tuple(cfg.metainfo['classes']) == SHAPE_CLASSES
        if config != CLS_CONFIG:
            assert [tuple(c)
                    for c in cfg.metainfo['palette']] == SHAPE_PALETTE
        assert cfg.image_size == DEFAULT_SIZE
        assert cfg.train_dataloader.num_workers <= 2
        assert not cfg.default_hooks.visualization.get('draw', False)


@pytest.mark.parametrize('split', ['train', 'val'])
def test_imagenet_layout(data_root, split):
    """One shape per image, of the class its list (and, for training, its
    folder) names; the classes take turns."""
    root = osp.join(data_root, 'imagenet')
    with open(osp.join(root, 'meta', f'{split}.txt')) as f:
        entries = [line.split() for line in f]
    assert len(entries) == NUM_IMAGES[split]
    for index, (path, label) in enumerate(entries):
        assert int(label) == index % len(SHAPE_CLASSES)
        if split == 'train':
            assert path.split('/')[0] == SHAPE_CLASSES[int(label)]
        image = cv2.imread(osp.join(root, split, path))
        assert image.shape == (SIZE, SIZE, 3)


def test_mmpretrain_imagenet_dataset_loads(data_root):
    from mmpretrain.registry import DATASETS
    init_default_scope('mmpretrain')
    cfg = demo_config(CLS_CONFIG, 'cls', data_root)
    train_set = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(train_set) == NUM_IMAGES['train']
    assert train_set.metainfo['classes'] == SHAPE_CLASSES
    val_set = DATASETS.build(cfg.val_dataloader.dataset)
    assert len(val_set) == NUM_IMAGES['val']
    item = val_set[1]
    assert item['inputs'].shape == (3, cfg.input_size, cfg.input_size)
    assert item['data_samples'].gt_label.tolist() == [1]


def demo_config(config, task, data_root):
    """The demo config pointed at ``data_root`` as run_demo.py does."""
    cfg = Config.fromfile(config)
    options = load_run_demo().data_options(task, data_root)
    cfg.merge_from_dict(dict(option.split('=', 1) for option in options))
    return cfg


def test_mmdet_coco_dataset_loads(data_root):
    from mmdet.registry import DATASETS
    init_default_scope('mmdet')
    cfg = demo_config(DET_CONFIG, 'det', data_root)
    assert cfg.val_evaluator.ann_file == osp.join(
        data_root, 'coco', 'annotations', 'instances_val.json')
    coco = read_coco(data_root, 'train')
    train_set = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(train_set) == NUM_IMAGES['train']
    assert train_set.metainfo['classes'] == SHAPE_CLASSES
    sample = train_set[0]['data_samples']
    num_anns = sum(a['image_id'] == sample.img_id
                   for a in coco['annotations'])
    gt = sample.gt_instances
    assert len(gt) == num_anns
    assert tuple(gt.masks.masks.shape[1:]) == (SIZE, SIZE)
    assert int(gt.labels.max()) < len(SHAPE_CLASSES)

    val_set = DATASETS.build(cfg.val_dataloader.dataset)
    assert len(val_set) == NUM_IMAGES['val']
    assert val_set[0]['inputs'].shape == (3, SIZE, SIZE)


def test_mmseg_dataset_loads(data_root):
    from mmseg.registry import DATASETS
    init_default_scope('mmseg')
    cfg = demo_config(SEG_CONFIG, 'seg', data_root)
    val_set = DATASETS.build(cfg.val_dataloader.dataset)
    assert len(val_set) == NUM_IMAGES['val']
    assert val_set.metainfo['classes'] == SHAPE_CLASSES
    assert val_set.metainfo['reduce_zero_label']
    item = val_set[0]
    label = cv2.imread(
        osp.join(data_root, 'ade', 'annotations', 'validation',
                 '000000.png'), cv2.IMREAD_UNCHANGED)
    # Background (0) becomes the ignore index, shape k + 1 becomes k.
    reduced = np.where(label == 0, 255, label.astype(np.int64) - 1)
    gt = item['data_samples'].gt_sem_seg.data[0].numpy()
    np.testing.assert_array_equal(gt, reduced)
    assert len(DATASETS.build(cfg.train_dataloader.dataset)) == \
        NUM_IMAGES['train']


def train_briefly(config, task, data_root, work_dir):
    from mmengine.runner import Runner
    cfg = demo_config(config, task, data_root)
    cfg.work_dir = str(work_dir)
    cfg.train_cfg.max_iters = 2
    # No validation inside the loop; it runs once below.
    cfg.train_cfg.val_begin = 3
    cfg.train_dataloader.batch_size = 2
    cfg.default_hooks.logger.interval = 1
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert osp.isfile(osp.join(str(work_dir), 'iter_2.pth'))
    return runner.val()


def test_det_demo_trains_and_evaluates(data_root, tmp_path):
    metrics = train_briefly(DET_CONFIG, 'det', data_root, tmp_path)
    for name in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert 0 <= metrics[name] <= 1


def test_seg_demo_trains_and_evaluates(data_root, tmp_path):
    metrics = train_briefly(SEG_CONFIG, 'seg', data_root, tmp_path)
    assert 0 <= metrics['mIoU'] <= 100


def test_cls_demo_trains_and_evaluates(data_root, tmp_path):
    metrics = train_briefly(CLS_CONFIG, 'cls', data_root, tmp_path)
    assert 0 <= metrics['accuracy/top1'] <= 100
