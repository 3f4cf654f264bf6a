# Copyright (c) OpenMMLab. All rights reserved.
"""The plugin's model index (``.mim/model-index.yml``) and its ImageNet
classifiers in mmpretrain's ``ModelHub``.

After ``import mmplugin_l2vit``, ``mmpretrain.list_models('*l2vit*')``
lists our classifiers, and ``mmpretrain.get_model(NAME)`` builds one
(building needs ``mmpretrain.models``, which imports torchvision). Only the
classifiers are registered (:data:`CLASSIFIER_DATA`): mmpretrain
builds every model in its own scope, so a detector or segmentor there
could be listed but never built.
"""
import os.path as osp

MODEL_INDEX = osp.join(
    osp.dirname(osp.abspath(__file__)), '.mim', 'model-index.yml')
# A model trained on these data sets only is an ImageNet classifier; the
# detectors and segmentors also name COCO or ADE20K.
CLASSIFIER_DATA = frozenset(('ImageNet-1k', 'ImageNet-21k'))


def load_model_index(path: str = MODEL_INDEX):
    """Load a model index with its metafiles' collections merged into the
    models, as ``mim`` and mmpretrain read it.

    Args:
        path (str): The ``model-index.yml``. Defaults to the installed
            package's.

    Returns:
        modelindex.ModelIndex: Its ``models`` are ``modelindex`` models
        whose ``config`` paths are relative to the index's folder.
    """
    from modelindex.load_model_index import load
    index = load(path)
    index.build_models_with_collections()
    return index


def register_with_mmpretrain() -> int:
    """Add the classifiers of :data:`MODEL_INDEX` to mmpretrain's
    ``ModelHub``; return how many were added.

    Nothing is added when mmpretrain cannot be imported (the registry
    bridge warns about that), when the package is used from a checkout
    that was never installed (no ``.mim``: ``pip install -e .`` links it)
    or when they are registered already. ``ModelHub.register_model_index``
    would register every entry, so the classifiers are added to its table
    the way it adds them, one by one, with absolute config paths.
    """
    if not osp.isfile(MODEL_INDEX):
        return 0
    try:
        from mmpretrain.apis.model import ModelHub
    except Exception:  # noqa: BLE001  (mmdet-style version assertions)
        return 0
    added = 0
    for model in load_model_index().models:
        name = model.name.lower()
        training_data = set(model.metadata.training_data)
        if not training_data <= CLASSIFIER_DATA or ModelHub.has(name):
            continue
        model.config = osp.join(osp.dirname(MODEL_INDEX), model.config)
        ModelHub._models_dict[name] = model
        added += 1
    return added
