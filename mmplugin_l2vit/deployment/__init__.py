# Copyright (c) OpenMMLab. All rights reserved.
from .onnx_export import (INPUT_NAME, SegmentorLogits,
                          TraceableAdaptiveAvgPool2d, build_exportable,
                          export_onnx, onnxruntime_session, relative_errors,
                          traceable_pooling)

__all__ = [
    'INPUT_NAME', 'SegmentorLogits', 'TraceableAdaptiveAvgPool2d',
    'build_exportable', 'export_onnx', 'onnxruntime_session',
    'relative_errors', 'traceable_pooling'
]
