# Copyright (c) OpenMMLab. All rights reserved.
"""A deterministic synthetic "shapes" dataset for quick end-to-end runs.

Every scene is a textured, noisy background with a few filled shapes
(:data:`SHAPE_CLASSES`) of varied size, rotation and colour. Shapes are
stacked in drawing order, so later ones occlude earlier ones. A shape that
would leave an earlier one less than ``min_visible`` of its own area is not
drawn, so every visible shape is annotated and its annotation is the part
that remains visible (possibly in several pieces or with holes).

The same scenes are written twice, and a classification set a third time:

* ``coco/``: instance segmentation in COCO format, ``train/*.jpg``,
  ``val/*.jpg`` and ``annotations/instances_{train,val}.json`` with
  compressed RLE masks, tight boxes of the visible part, pixel areas and
  ``iscrowd=0``. Category ids are ``1..len(SHAPE_CLASSES)``.
* ``ade/``: semantic segmentation in the ADE20K layout,
  ``images/{training,validation}/*.jpg`` and
  ``annotations/{training,validation}/*.png`` label maps. As in ADE20K, 0
  is the background ("other") and shape ``i`` of :data:`SHAPE_CLASSES` is
  ``i + 1``; datasets read them with ``reduce_zero_label=True``, which
  ignores the background and maps the shapes to ``0..len(SHAPE_CLASSES)-1``.
* ``imagenet/``: image classification in the ImageNet layout (what
  mmpretrain's ``ImageNet`` dataset reads): ``train/<class>/*.JPEG``,
  ``val/*.JPEG`` and the lists ``meta/{train,val}.txt`` (``path label``).
  Each image shows one large shape of its class in the class's colour of
  :data:`SHAPE_PALETTE` (jittered), at a random size, position and
  rotation, on the same kind of background: shape and colour both tell
  the class. The classes take turns, so the splits are balanced.

Scene ``k`` of a split (and classification image ``k``) depends only on
``(seed, split, k)``: the validation scenes do not change with
``num_train``, and two runs with the same arguments write byte-identical
files.
"""
import json
import os
import os.path as osp
import shutil
from typing import Dict, List, Tuple

import cv2
import numpy as np
from pycocotools import mask as mask_utils

SHAPE_CLASSES = ('circle', 'square', 'triangle', 'star')
SHAPE_PALETTE = [(220, 20, 60), (0, 130, 200), (60, 180, 75), (255, 200, 0)]

# What tools/misc/generate_demo_data.py writes by default; the demo configs
# expect this image size.
DEFAULT_NUM_TRAIN = 1000
DEFAULT_NUM_VAL = 100
DEFAULT_SIZE = 128

SPLITS = ('train', 'val')
ADE_SPLIT_NAMES = dict(train='training', val='validation')

# Radius of a shape's circumscribed circle, as a fraction of the image side
# (drawn log-uniformly).
RADIUS_RANGE = (0.07, 0.22)
# Points of the star and the ratio of its inner to its outer radius.
STAR_POINTS = 5
STAR_INNER_RATIO = 0.45
# The smallest mean absolute difference (per channel, 0..255) between a
# shape's colour and the background it is drawn on.
MIN_CONTRAST = 60.
# Tries to place each shape before the scene settles for fewer.
PLACEMENT_TRIES = 20
# Radius range of the one shape of a classification image, and the
# standard deviation of the jitter of its class colour (per channel).
CLS_RADIUS_RANGE = (0.18, 0.4)
CLS_COLOUR_JITTER = 20.


def shape_mask(label: int, center: Tuple[float, float], radius: float,
               angle: float, size: int) -> np.ndarray:
    """Rasterise one shape.

    Args:
        label (int): Index into :data:`SHAPE_CLASSES`.
        center (tuple[float, float]): ``(x, y)`` in pixels.
        radius (float): Radius of the circumscribed circle in pixels.
        angle (float): Rotation in radians (ignored for circles).
        size (int): Side of the square image.

    Returns:
        np.ndarray: ``(size, size)`` bool mask.
    """
    canvas = np.zeros((size, size), np.uint8)
    name = SHAPE_CLASSES[label]
    if name == 'circle':
        cv2.circle(canvas, (round(center[0]), round(center[1])),
                   round(radius), 1, -1)
        return canvas.astype(bool)
    if name == 'star':
        corners = 2 * STAR_POINTS
        radii = np.where(np.arange(corners) % 2 == 0, radius,
                         radius * STAR_INNER_RATIO)
    else:
        corners = 4 if name == 'square' else 3
        radii = np.full(corners, radius)
    theta = angle + 2 * np.pi * np.arange(corners) / corners
    points = np.stack([center[0] + radii * np.cos(theta),
                       center[1] + radii * np.sin(theta)], axis=1)
    cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    return canvas.astype(bool)


def textured_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour field with a stripe texture, float32 HWC."""
    coarse = rng.uniform(40, 215, (4, 4, 3)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    period = rng.uniform(6, 16)
    direction = rng.uniform(0, np.pi)
    ys, xs = np.mgrid[:size, :size].astype(np.float32)
    phase = (xs * np.cos(direction) + ys * np.sin(direction)) / period
    stripes = rng.uniform(5, 15) * np.sin(2 * np.pi * phase)
    return field + stripes[..., None]


def contrasting_colour(rng: np.random.Generator,
                       reference: np.ndarray) -> np.ndarray:
    """A random colour at least :data:`MIN_CONTRAST` away from
    ``reference`` (mean absolute channel difference)."""
    while True:
        colour = rng.uniform(0, 255, 3)
        if np.abs(colour - reference).mean() >= MIN_CONTRAST:
            return colour


def render_scene(
        rng: np.random.Generator, size: int, max_objects: int,
        min_visible: float) -> Tuple[np.ndarray, np.ndarray, List[int]]:
    """Draw one scene.

    The scene asks for 2 to ``max_objects`` shapes, drawn one over the
    other. A shape gets :data:`PLACEMENT_TRIES` random placements to leave
    every shape below it at least ``min_visible`` of its area; when none
    does, the scene keeps the shapes it has.

    Args:
        rng (np.random.Generator): Source of all randomness.
        size (int): Side of the square image.
        max_objects (int): Most shapes per scene.
        min_visible (float): Smallest visible fraction of a shape's area
            a later shape may leave.

    Returns:
        tuple: The BGR ``uint8`` image, the ``int32`` instance map (0 for
        the background, ``k + 1`` for the k-th shape) and the list of the
        shapes' labels.
    """
    image = textured_background(rng, size)
    instance_map = np.zeros((size, size), np.int32)
    labels: List[int] = []
    full_areas: List[int] = []
    for _ in range(int(rng.integers(2, max_objects + 1))):
        for _ in range(PLACEMENT_TRIES):
            label = int(rng.integers(len(SHAPE_CLASSES)))
            radius = size * np.exp(rng.uniform(*np.log(RADIUS_RANGE)))
            center = rng.uniform(radius, size - radius, 2)
            mask = shape_mask(label, center, radius, rng.uniform(0, np.pi),
                              size)
            visible = np.bincount(
                instance_map[~mask], minlength=len(labels) + 1)[1:]
            if np.all(visible >= min_visible * np.array(full_areas)):
                break
        else:
            break
        colour = contrasting_colour(rng, image[mask].mean(axis=0))
        shading = rng.uniform(-20, 20, 2)
        ys, xs = np.nonzero(mask)
        gradient = ((xs - center[0]) * shading[0] +
                    (ys - center[1]) * shading[1]) / radius
        image[ys, xs] = colour + gradient[:, None]
        labels.append(label)
        full_areas.append(int(mask.sum()))
        instance_map[mask] = len(labels)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8), instance_map, \
        labels


def render_object(rng: np.random.Generator, size: int,
                  label: int) -> np.ndarray:
    """Draw one classification image: a single shape of class ``label``.

    Args:
        rng (np.random.Generator): Source of all randomness.
        size (int): Side of the square image.
        label (int): Index into :data:`SHAPE_CLASSES`.

    Returns:
        np.ndarray: The BGR ``uint8`` image.
    """
    image = textured_background(rng, size)
    radius = size * rng.uniform(*CLS_RADIUS_RANGE)
    # At least two thirds of the circumscribed circle inside the image.
    margin = radius / 3
    center = rng.uniform(margin, size - margin, 2)
    mask = shape_mask(label, center, radius, rng.uniform(0, np.pi), size)
    # The class's palette colour (RGB there, BGR here), jittered.
    colour = np.array(SHAPE_PALETTE[label][::-1]) + rng.normal(
        0, CLS_COLOUR_JITTER, 3)
    ys, xs = np.nonzero(mask)
    shading = rng.uniform(-20, 20, 2)
    gradient = ((xs - center[0]) * shading[0] +
                (ys - center[1]) * shading[1]) / radius
    image[ys, xs] = colour + gradient[:, None]
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8)


def write_imagenet_split(root: str, split: str, split_index: int,
                         count: int, seed: int, size: int) -> None:
    """Write ``count`` classification images of ``split`` in the ImageNet
    layout under ``root`` and their list ``meta/<split>.txt``."""
    lines = []
    for index in range(count):
        rng = np.random.default_rng([seed, split_index, index, 1])
        label = index % len(SHAPE_CLASSES)
        image = render_object(rng, size, label)
        if split == 'train':
            name = SHAPE_CLASSES[label]
            path = f'{name}/{name}_{index:06d}.JPEG'
        else:
            path = f'{split}_{index:06d}.JPEG'
        os.makedirs(osp.dirname(osp.join(root, split, path)), exist_ok=True)
        cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tofile(
            osp.join(root, split, path))
        lines.append(f'{path} {label}\n')
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
        f.writelines(lines)


def coco_annotations(instance_map: np.ndarray, labels: List[int],
                     image_id: int, first_id: int) -> List[dict]:
    """COCO annotations of the visible part of each shape."""
    annotations = []
    for index, label in enumerate(labels):
        mask = np.asfortranarray((instance_map == index + 1).astype(np.uint8))
        rle = mask_utils.encode(mask)
        annotations.append(
            dict(
                id=first_id + index,
                image_id=image_id,
                category_id=label + 1,
                segmentation=dict(
                    size=[int(s) for s in rle['size']],
                    counts=rle['counts'].decode('ascii')),
                area=int(mask_utils.area(rle)),
                bbox=[float(v) for v in mask_utils.toBbox(rle)],
                iscrowd=0))
    return annotations


def semantic_labels(instance_map: np.ndarray,
                    labels: List[int]) -> np.ndarray:
    """ADE-style label map: 0 for the background, class index + 1 for the
    shapes."""
    lookup = np.array([0] + [label + 1 for label in labels], np.uint8)
    return lookup[instance_map]


def prepare_output_dir(out_dir: str, overwrite: bool = False) -> None:
    """Make ``out_dir`` an empty directory for a new dataset.

    Stale files from an earlier run would be read as part of the new
    dataset (the ADE layout is a directory listing), so a directory that
    holds anything is refused unless ``overwrite``, which empties it first.
    It never empties the filesystem root, the home directory or a directory
    that holds the current one.

    Raises:
        ValueError: For an empty path.
        FileExistsError: For a non-empty directory without ``overwrite``,
            or a path that is not a directory.
    """
    if not out_dir:
        raise ValueError('the output directory is an empty path; name one')
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise FileExistsError(f'{out_dir} exists and is not a directory')
    if osp.isdir(out_dir) and os.listdir(out_dir):
        if not overwrite:
            raise FileExistsError(
                f'{out_dir} is not empty: its files would mix with the new '
                'dataset; pass overwrite=True (--overwrite) to empty it '
                'first, or name another directory')
        target = osp.realpath(out_dir)
        protected = (osp.realpath(os.sep), osp.realpath(osp.expanduser('~')))
        if target in protected or osp.realpath(os.getcwd()).startswith(
                osp.join(target, '')):
            raise ValueError(f'refusing to empty {out_dir}: it is the root, '
                             'the home directory or holds the current one')
        for name in os.listdir(out_dir):
            path = osp.join(out_dir, name)
            if osp.isdir(path) and not osp.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    os.makedirs(out_dir, exist_ok=True)


def generate_demo_data(out_dir: str,
                       seed: int = 0,
                       num_train: int = DEFAULT_NUM_TRAIN,
                       num_val: int = DEFAULT_NUM_VAL,
                       size: int = DEFAULT_SIZE,
                       max_objects: int = 5,
                       min_visible: float = 0.6,
                       overwrite: bool = False) -> Dict[str, str]:
    """Write the COCO-style, ADE-style and ImageNet-style shape datasets
    under ``out_dir``.

    Args:
        out_dir (str): Output directory: created if missing, refused if it
            holds anything unless ``overwrite``.
        seed (int): Seed of the whole dataset. Default: 0.
        num_train (int): Training scenes. Default: DEFAULT_NUM_TRAIN.
        num_val (int): Validation scenes. Default: DEFAULT_NUM_VAL.
        size (int): Side of the square images in pixels.
            Default: DEFAULT_SIZE.
        max_objects (int): Most shapes per scene. Default: 5.
        min_visible (float): Smallest visible fraction of an occluded
            shape. Default: 0.6.
        overwrite (bool): Empty a non-empty ``out_dir`` first (see
            :func:`prepare_output_dir`). Default: False.

    Returns:
        dict: The roots of the three datasets, ``coco``, ``ade`` and
        ``imagenet``.
    """
    if size < 32:
        raise ValueError(f'size must be at least 32, got {size}')
    for name, count in (('num_train', num_train), ('num_val', num_val)):
        if count < 0:
            raise ValueError(f'{name} must be at least 0, got {count}')
    prepare_output_dir(out_dir, overwrite)
    coco_root = osp.join(out_dir, 'coco')
    ade_root = osp.join(out_dir, 'ade')
    imagenet_root = osp.join(out_dir, 'imagenet')
    os.makedirs(osp.join(coco_root, 'annotations'), exist_ok=True)
    categories = [
        dict(id=i + 1, name=name, supercategory='shape')
        for i, name in enumerate(SHAPE_CLASSES)
    ]
    for split_index, (split, count) in enumerate(
            zip(SPLITS, (num_train, num_val))):
        ade_split = ADE_SPLIT_NAMES[split]
        image_dir = osp.join(coco_root, split)
        ade_image_dir = osp.join(ade_root, 'images', ade_split)
        ade_label_dir = osp.join(ade_root, 'annotations', ade_split)
        for directory in (image_dir, ade_image_dir, ade_label_dir):
            os.makedirs(directory, exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            rng = np.random.default_rng([seed, split_index, index])
            image, instance_map, labels = render_scene(
                rng, size, max_objects, min_visible)
            name = f'{index:06d}'
            jpeg = cv2.imencode('.jpg', image,
                                [cv2.IMWRITE_JPEG_QUALITY, 90])[1]
            for directory in (image_dir, ade_image_dir):
                jpeg.tofile(osp.join(directory, name + '.jpg'))
            cv2.imwrite(
                osp.join(ade_label_dir, name + '.png'),
                semantic_labels(instance_map, labels))
            image_id = index + 1
            images.append(
                dict(id=image_id, file_name=name + '.jpg', height=size,
                     width=size))
            annotations += coco_annotations(instance_map, labels, image_id,
                                            len(annotations) + 1)
        coco = dict(
            info=dict(
                description='mmplugin_l2vit synthetic shapes',
                seed=seed),
            licenses=[],
            images=images,
            annotations=annotations,
            categories=categories)
        with open(osp.join(coco_root, 'annotations',
                           f'instances_{split}.json'), 'w') as f:
            json.dump(coco, f)
        write_imagenet_split(imagenet_root, split, split_index, count, seed,
                             size)
    return dict(coco=coco_root, ade=ade_root, imagenet=imagenet_root)
