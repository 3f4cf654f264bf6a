# Copyright (c) OpenMMLab. All rights reserved.
from .backbones import *  # noqa: F401,F403
