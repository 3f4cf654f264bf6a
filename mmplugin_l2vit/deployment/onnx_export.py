# Copyright (c) OpenMMLab. All rights reserved.
"""ONNX export of the backbones and of whole mmseg segmentors.

The graphs come from PyTorch's TorchScript exporter
(``torch.onnx.export(..., dynamo=False)``), which traces one forward pass.
The backbones are written so that one trace holds for every input size
(see :func:`mmplugin_l2vit.models.layers.tokens.is_exporting`): sizes flow
through the graph as tensors, padding and resizing happen even when they
are by zero, and the two cases of shifted-window attention are selected in
the graph. The torch.export-based exporter (``dynamo=True``, PyTorch's
default) was measured on the same backbones: with dynamic sizes it traces
25x slower (150 s against 6 s for a small L²ViT) and fails on the shifted
windows, whose branches on the sizes it cannot keep symbolic.
"""
import os.path as osp
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

HW = Tuple[int, int]
OPSET_VERSION = 17
INPUT_NAME = 'input'
SEGMENTOR_TYPES = ('EncoderDecoder', 'CascadeEncoderDecoder')


class SegmentorLogits(nn.Module):
    """An mmseg segmentor as a plain module: a normalised ``(B, 3, H, W)``
    batch -> ``(B, num_classes, H, W)`` seg logits (the decode head's
    output resized to the input, as mmseg's ``encode_decode`` does, but at
    the input's own size, so the graph stays dynamic).

    Args:
        segmentor (nn.Module): An mmseg ``EncoderDecoder``.
    """

    def __init__(self, segmentor: nn.Module):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, inputs):
        logits = self.segmentor._forward(inputs)
        return F.interpolate(
            logits,
            size=inputs.shape[-2:],
            mode='bilinear',
            align_corners=self.segmentor.decode_head.align_corners)


class TraceableAdaptiveAvgPool2d(nn.Module):
    """``nn.AdaptiveAvgPool2d`` for a graph that must hold for every input
    size: the TorchScript exporter needs the input's size to export
    adaptive pooling (a dynamic size fails with "input size not
    accessible"). Here each output bin is the mean over its PyTorch bin
    (rows ``floor(i H / n)`` to ``ceil((i + 1) H / n)``), written as two
    products with averaging matrices built from the input's size.

    Args:
        output_size (int | tuple[int, int]): As for
            ``nn.AdaptiveAvgPool2d``.
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = nn.modules.utils._pair(output_size)

    @staticmethod
    def _averaging(length, bins: int, like: torch.Tensor):
        """``(bins, length)`` matrix whose rows average PyTorch's bins."""
        index = torch.arange(bins, device=like.device)
        start = index * length // bins
        end = ((index + 1) * length + bins - 1) // bins
        position = torch.arange(length, device=like.device)
        inside = ((position[None] >= start[:, None]) &
                  (position[None] < end[:, None])).to(like.dtype)
        return inside / inside.sum(dim=1, keepdim=True)

    def forward(self, x):
        rows = self._averaging(x.shape[-2], self.output_size[0], x)
        cols = self._averaging(x.shape[-1], self.output_size[1], x)
        return rows @ x @ cols.t()


def traceable_pooling(model: nn.Module) -> nn.Module:
    """Replace every ``nn.AdaptiveAvgPool2d`` of ``model`` (in place) by a
    :class:`TraceableAdaptiveAvgPool2d`; returns ``model``."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d):
                setattr(module, child_name,
                        TraceableAdaptiveAvgPool2d(child.output_size))
    return model


def build_exportable(spec: str,
                     checkpoint: Optional[str] = None,
                     backbone_only: bool = False) -> Tuple[nn.Module, str]:
    """The module to export for ``spec``, in eval mode, and what it is.

    Args:
        spec (str): A backbone ``TYPE[:ARCH]`` (e.g. ``'L2ViT:tiny'``) or a
            config file. A segmentor config (mmseg ``EncoderDecoder``) gives
            the whole segmentor as :class:`SegmentorLogits`; any other
            config (detectors, whose heads need mmdeploy's rewrites) its
            backbone.
        checkpoint (str, optional): Path or URL of the weights; without one
            the weights are random (a backbone's initialisation, a
            segmentor's as constructed).
        backbone_only (bool): Export a segmentor config's backbone only.

    Returns:
        tuple[nn.Module, str]: The module and ``'segmentor'`` or
        ``'backbone'``.
    """
    from ..analysis import build_backbone
    if osp.isfile(spec) and not backbone_only:
        from mmengine.config import Config
        cfg = Config.fromfile(spec)
        if cfg.model.get('type') in SEGMENTOR_TYPES:
            return _build_segmentor(cfg, checkpoint), 'segmentor'
    backbone = build_backbone(spec, checkpoint)
    return backbone, 'backbone'


def _build_segmentor(cfg, checkpoint: Optional[str]) -> nn.Module:
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = cfg.model
    # Weights come from the checkpoint (or stay random): nothing is
    # downloaded for the backbone.
    model_cfg.backbone.pop('init_cfg', None)
    model_cfg.pop('pretrained', None)
    segmentor = MODELS.build(model_cfg)
    if checkpoint is not None:
        load_checkpoint(segmentor, checkpoint, map_location='cpu')
    segmentor.eval()
    return traceable_pooling(SegmentorLogits(segmentor)).eval()


def output_names(num_outputs: int) -> List[str]:
    return [f'output{i}' for i in range(num_outputs)]


def export_onnx(model: nn.Module,
                shape: HW,
                path: str,
                dynamic: bool = False,
                batch_size: int = 1) -> List[str]:
    """Trace ``model`` on a ``(batch_size, 3, *shape)`` input and write it
    to ``path`` as ONNX (opset :data:`OPSET_VERSION`).

    Args:
        model (nn.Module): Maps an image batch to a tensor or a tuple of
            tensors (a backbone's feature maps).
        shape (tuple[int, int]): Height and width of the traced input.
        path (str): Output ``.onnx`` file.
        dynamic (bool): Batch size, height and width of the input (and of
            every output) are dynamic axes; otherwise the graph is fixed
            to ``shape``.
        batch_size (int): Batch size of the traced input.

    Returns:
        list[str]: The names of the graph's outputs; its input is
        :data:`INPUT_NAME`.
    """
    model.eval()
    inputs = torch.randn(batch_size, 3, *shape)
    with torch.no_grad():
        outputs = model(inputs)
    names = output_names(len(_as_tuple(outputs)))
    dynamic_axes = None
    if dynamic:
        dynamic_axes = {
            name: {
                0: 'batch',
                2: f'{name}_height',
                3: f'{name}_width'
            }
            for name in [INPUT_NAME] + names
        }
    with warnings.catch_warnings():
        # The tracer warns about every Python value taken from a tensor;
        # those left in the model (input checks, constants) are size
        # independent, and the tests check the graphs at other sizes.
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.onnx.export(
            model, (inputs, ),
            path,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET_VERSION,
            do_constant_folding=True)
    return names


def _as_tuple(outputs) -> Tuple[torch.Tensor, ...]:
    return tuple(outputs) if isinstance(outputs,
                                        (tuple, list)) else (outputs, )


def onnxruntime_session(path: str, threads: Optional[int] = None):
    """A CPU onnxruntime session of the model at ``path``; ``threads``
    sets the intra-op threads (onnxruntime's default: one per core)."""
    import onnxruntime
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        path, options, providers=['CPUExecutionProvider'])


def relative_errors(model: nn.Module, session,
                    shapes: Sequence[HW]) -> List[float]:
    """For each ``(H, W)`` of ``shapes``: the largest absolute difference
    between the outputs of ``session`` and of ``model`` on one random
    image, relative to the largest absolute PyTorch output (the worst
    output of a tuple)."""
    errors = []
    for shape in shapes:
        inputs = torch.randn(1, 3, *shape)
        with torch.no_grad():
            expected = _as_tuple(model(inputs))
        got = session.run(None, {INPUT_NAME: inputs.numpy()})
        if len(got) != len(expected):
            raise RuntimeError(f'the ONNX model gave {len(got)} outputs, '
                               f'PyTorch {len(expected)}')
        errors.append(
            max(
                float((torch.from_numpy(out) - ref).abs().max() /
                      ref.abs().max().clamp(min=1e-12))
                for out, ref in zip(got, expected)))
    return errors
