# Copyright (c) OpenMMLab. All rights reserved.
"""Bad input to any backbone family fails early with the same clear
message: arch values at build time, image dtypes at forward time, and
checkpoints that would leave most weights unloaded at load time. An empty
batch gives empty outputs of the right shapes."""
import re

import pytest
import torch
import torch.nn as nn
from conftest import SMALL_ARCH
from l2vit_reference import official_state_dict
from mmengine.runner import load_checkpoint, load_state_dict

from mmplugin_l2vit import (FLattenCSWin, FLattenPVT, FLattenPVTv2,
                            FLattenSwin, L2ViT, explain_load_error)
from mmplugin_l2vit.models.converters import (L2VIT_CONVERTER,
                                              CheckpointFormatError)

WIDTHS = dict(embed_dims=[32, 64, 128, 256], num_heads=[1, 2, 4, 8])
SMALL = {
    L2ViT: dict(SMALL_ARCH, depths=[2, 1, 2, 1]),
    FLattenPVT: dict(WIDTHS, depths=[1, 1, 1, 1]),
    FLattenPVTv2: dict(WIDTHS, depths=[1, 1, 1, 1]),
    FLattenSwin: dict(WIDTHS, depths=[1, 1, 2, 1]),
    FLattenCSWin: dict(WIDTHS, depths=[1, 1, 1, 1]),
}
FAMILIES = list(SMALL)
STAGE_INTS = 'a list of 4 positive ints, one value per stage'
# (key, bad value, requirement) for the values of each family's arch dict.
BAD_VALUES = {
    'embed_dims': [([32, 64, 128], STAGE_INTS),
                   ([32, 64, 128.5, 256], STAGE_INTS),
                   ((32, 64, 0, 256), STAGE_INTS)],
    'depths': [([1, 0, 1, 1], STAGE_INTS), ([1, -2, 1, 1], STAGE_INTS),
               ([1, 1, 1, 1, 1], STAGE_INTS), (2, STAGE_INTS),
               ([1, True, 1, 1], STAGE_INTS)],
    'num_heads': [([1, 2, 4], STAGE_INTS), ([1, 2, 0, 8], STAGE_INTS)],
    'window_size': [(0, 'a positive int'), ([7, 7], 'a positive int'),
                    (7.5, 'a positive int')],
    'split_size': [(0, 'a positive int'), ((7, 7), 'a positive int')],
    'mlp_ratio': [(0, 'a positive number'), (-4., 'a positive number'),
                  (float('nan'), 'a positive number')],
    'mlp_ratios':
    [([8, 8, 4], 'a list of 4 positive numbers, one value per stage'),
     ([8, 8, 0, 4], 'a list of 4 positive numbers, one value per stage')],
    'pretrain_img_size': [(16, 'an int of at least 32, the total stride')],
    'pretrain_size': [(0, 'an int of at least 32, the total stride')],
}
BAD_ARCHS = [(family, key, value, requirement) for family in FAMILIES
             for key in (*family.arch_keys, *family.arch_defaults)
             for value, requirement in BAD_VALUES[key]]


@pytest.mark.parametrize('family,key,value,requirement', BAD_ARCHS)
def test_bad_arch_value_refused_at_build(family, key, value, requirement):
    arch = dict(SMALL[family], **{key: value})
    message = (f'{family.__name__} arch {key!r} must be {requirement}, got '
               f'{value!r}')
    with pytest.raises(ValueError, match=f'^{re.escape(message)}$'):
        family(arch)


@pytest.mark.parametrize('family', FAMILIES)
def test_heads_must_divide_dims_at_build(family):
    arch = dict(SMALL[family], num_heads=[1, 2, 6, 8])
    with pytest.raises(
            ValueError,
            match=rf"^{family.__name__} arch 'num_heads' must divide "
            r"'embed_dims' in every stage, got embed_dims \[32, 64, 128, "
            r'256\] and num_heads \[1, 2, 6, 8\] \(stage 3: 128 is not '
            r'divisible by num_heads 6\)$'):
        family(arch)


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('in_channels', [0, 3.0, None])
def test_bad_in_channels(family, in_channels):
    with pytest.raises(ValueError, match='in_channels must be a positive'):
        family(SMALL[family], in_channels=in_channels)


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (1, 3)])
@pytest.mark.parametrize('training', [False, True])
def test_empty_batch_gives_empty_outputs(family, out_indices, training):
    model = family(SMALL[family], out_indices=out_indices).train(training)
    size = (3, 70, 101)
    with torch.no_grad():
        expected = [out.shape[1:] for out in model(torch.zeros(1, *size))]
    outs = model(torch.zeros(0, *size))
    assert [tuple(out.shape) for out in outs] == [(0, *shape)
                                                  for shape in expected]


@pytest.mark.parametrize('family', FAMILIES)
@pytest.mark.parametrize('dtype', [torch.uint8, torch.int64, torch.float64])
def test_wrong_image_dtype_names_the_expected_one(family, dtype):
    model = family(SMALL[family])
    image = torch.zeros(1, 3, 64, 64, dtype=dtype)
    with pytest.raises(
            TypeError,
            match=rf"^{family.__name__} expects a floating-point image of "
            rf"its weights' dtype torch.float32 .*, got {dtype}"):
        model(image)


def test_image_dtype_follows_the_weights_and_autocast():
    model = L2ViT(SMALL[L2ViT], out_indices=(3, )).eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        assert model(image.bfloat16())[0].shape == (1, 256, 2, 2)
    model.to(torch.float64)
    assert model(image.double())[0].dtype == torch.float64
    with pytest.raises(TypeError, match='dtype torch.float64 .*torch.float32'):
        model(image)


class Detector(nn.Module):
    """The backbone under ``backbone.``, as in an mmdet detector."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.neck = nn.Conv2d(256, 8, 1)


def small_l2vit(**kwargs):
    return L2ViT(SMALL_ARCH, **kwargs)


def official_release():
    official = official_state_dict(SMALL_ARCH['embed_dims'],
                                   SMALL_ARCH['depths'],
                                   SMALL_ARCH['num_heads'])
    return dict(model=official, epoch=299, max_accuracy=80.)


def resnet_state_dict():
    return {
        'conv1.weight': torch.zeros(64, 3, 7, 7),
        'bn1.weight': torch.ones(64),
        'layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1),
        'fc.weight': torch.zeros(1000, 2048),
    }


def total_weights():
    return len(small_l2vit().state_dict())


def test_release_file_into_a_whole_model_refused(tmp_path):
    """As ``load_from`` and ``tools/test.py CONFIG CKPT`` load it (mmengine
    and torch show the backbone only the keys under its prefix)."""
    message = (rf'^L2ViT: only 0 of its {total_weights()} weights would '
               r"load from this checkpoint under the prefix 'backbone.'\. It "
               r"holds no key under 'backbone.'\. To load it anyway, build "
               r'the backbone with allow_partial_load=True\.$')
    with pytest.raises(CheckpointFormatError, match=message):
        load_state_dict(Detector(small_l2vit()), official_release())
    with pytest.raises(CheckpointFormatError, match=message):
        Detector(small_l2vit()).load_state_dict(
            official_release()['model'], strict=False)


@pytest.mark.parametrize('bare', [False, True])
def test_release_file_explained_with_its_converter(tmp_path, bare):
    path = str(tmp_path / 'release.pth')
    release = official_release()
    torch.save(release['model'] if bare else release, path)
    error = CheckpointFormatError('L2ViT: only 0 of its weights')
    assert explain_load_error(path, error) == (
        f'{path}: this is an official L2ViT release file, which holds a '
        'backbone only, not a checkpoint of this model: convert it with '
        '`python tools/model_converters/l2vit2mmdet.py RELEASE.pth '
        "BACKBONE.pth`, load that with the backbone's init_cfg=dict("
        "type='Pretrained', checkpoint='BACKBONE.pth') (the release file "
        'loads there as it is too), then train or test a checkpoint of the '
        'whole model')


def test_flatten_release_explained_with_its_family(tmp_path):
    from flatten_swin_reference import \
        official_state_dict as swin_official_state_dict
    path = str(tmp_path / 'release.pth')
    torch.save(
        dict(
            model=swin_official_state_dict(WIDTHS['embed_dims'], [1, 1, 2, 1],
                                           WIDTHS['num_heads'])), path)
    assert '`python tools/model_converters/flatten2mmdet.py --family swin ' \
        'RELEASE.pth BACKBONE.pth`' in explain_load_error(path, None)


def test_other_errors_explained_as_they_are(tmp_path):
    path = str(tmp_path / 'detector.pth')
    torch.save(dict(state_dict=Detector(small_l2vit()).state_dict()), path)
    error = CheckpointFormatError('L2ViT: only 3 of its 204 weights')
    assert explain_load_error(path, error) == f'{path}: {error}'
    assert explain_load_error(None, error) == f'loading weights: {error}'


def test_foreign_state_dict_refused():
    with pytest.raises(
            CheckpointFormatError,
            match=r"only 0 of its \d+ weights .* no key under 'backbone.'"):
        load_state_dict(Detector(small_l2vit()), resnet_state_dict())
    with pytest.raises(CheckpointFormatError, match='not an L2ViT one'):
        small_l2vit().load_state_dict(resnet_state_dict(), strict=False)


def test_checkpoint_of_another_arch_refused():
    wider = L2ViT(dict(SMALL_ARCH, embed_dims=[64, 128, 256,
                                               512])).state_dict()
    with pytest.raises(
            CheckpointFormatError,
            match=r'are there with other shapes \(e\.g\. stem\.conv1\.'
            r'weight: \(32, 3, 3, 3\) in the checkpoint, \(16, 3, 3, 3\) in '
            r'the model\): a checkpoint of another arch\?'):
        small_l2vit().load_state_dict(wider, strict=False)


def test_another_family_through_mmengine_refused(tmp_path):
    """``load_from`` a checkpoint of another model: mmengine loads with
    strict=False and used to warn only."""
    swin_detector = Detector(FLattenSwin(SMALL[FLattenSwin]))
    path = str(tmp_path / 'swin_detector.pth')
    torch.save(dict(state_dict=swin_detector.state_dict(), meta={}), path)
    with pytest.raises(CheckpointFormatError, match='^L2ViT: only'):
        load_checkpoint(Detector(small_l2vit()), path, strict=False)


def test_partial_load_behind_the_option():
    source = small_l2vit()
    stem_only = {
        f'backbone.{k}': v.clone() + 1
        for k, v in source.state_dict().items() if k.startswith('stem.')
    }
    with pytest.raises(CheckpointFormatError, match='allow_partial_load'):
        Detector(small_l2vit()).load_state_dict(stem_only, strict=False)
    model = Detector(small_l2vit(allow_partial_load=True))
    before = model.backbone.stages[0].blocks[0].ffn.fc1.weight.clone()
    missing, _ = model.load_state_dict(stem_only, strict=False)
    assert torch.equal(model.backbone.stem.conv1.weight,
                       stem_only['backbone.stem.conv1.weight'])
    assert torch.equal(model.backbone.stages[0].blocks[0].ffn.fc1.weight,
                       before)
    assert 'backbone.stages.0.blocks.0.ffn.fc1.weight' in missing


def test_usual_loads_still_work(tmp_path):
    """A whole model, a converted or an official checkpoint (which lack
    some output norms) and a detector's strict=False load."""
    source = Detector(small_l2vit())
    target = Detector(small_l2vit())
    target.load_state_dict(source.state_dict())
    assert torch.equal(target.backbone.norm0.weight,
                       source.backbone.norm0.weight)
    path = str(tmp_path / 'detector.pth')
    torch.save(dict(state_dict=source.state_dict(), meta={}), path)
    load_checkpoint(Detector(small_l2vit()), path, strict=False)

    release = official_release()
    converted = L2VIT_CONVERTER.convert(release['model'])
    missing, _ = small_l2vit().load_state_dict(converted, strict=False)
    assert sorted(missing) == [
        f'norm{i}.{p}' for i in range(3) for p in ('bias', 'weight')
    ]
    small_l2vit().load_state_dict(release, strict=False)
