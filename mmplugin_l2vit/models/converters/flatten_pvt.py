# Copyright (c) OpenMMLab. All rights reserved.
"""Key maps between the official FLatten-PVT / FLatten-PVTv2 checkpoints and
:class:`FLattenPVT` / :class:`FLattenPVTv2`.

Official (classification) key, stage s = 1..4  ->  plugin key
``patch_embed1``, ``pos_embed1``             ``stem``, ``stem.pos_embed``
``patch_embed{s}``, ``pos_embed{s}``         ``stages.{s-1}.downsample``,
(s > 1)                                      ``~.downsample.pos_embed``
``block{s}.{j}``                             ``stages.{s-1}.blocks.{j}``
``block{s}.{j}.mlp.dwconv.dwconv`` (v2)      ``~.blocks.{j}.mlp.dwconv``
``norm{s}`` (v2, trained, applied)           ``norm{s-1}``
``norm`` (v1, never applied)                 dropped
``head``                                     dropped, or ``head.fc``
                                             (mmpretrain)

Only PVT v1 has ``pos_embed{s}``, only PVTv2 ``mlp.dwconv``: the two
families are told apart by those keys, and a checkpoint of one refused by
the other with a message that names the right backbone. Spatial-reduction
keys (``attn.sr``, ``attn.norm``; sr > 1, used by no official model) are
left unmapped, so the converter reports them instead of loading a model
that would ignore them.
"""
import re
from typing import Mapping

from .official import CheckpointFormatError, KeyMapConverter

PVT_OFFICIAL = r'^pos_embed[1-4]$'
PVT_OWN = r'^(stem|stages\.\d+\.downsample)\.pos_embed$'
PVT_V2_OFFICIAL = r'^block[1-4]\.\d+\.mlp\.dwconv\.dwconv\.'
PVT_V2_OWN = r'^stages\.\d+\.blocks\.\d+\.mlp\.dwconv\.'


class PVTFamilyConverter(KeyMapConverter):
    """A :class:`KeyMapConverter` that recognises the sibling PVT family's
    checkpoints (official or converted) and says which backbone takes them.

    Args:
        sibling (str): The other family's backbone, e.g. ``'FLattenPVTv2'``.
        sibling_pattern (str): Matches keys only that family has.
        *args, **kwargs: See :class:`KeyMapConverter`.
    """

    def __init__(self, *args, sibling: str, sibling_pattern: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.sibling = sibling
        self.sibling_pattern = re.compile(sibling_pattern)

    def _sibling_hint(self, keys) -> str:
        if any(self.sibling_pattern.match(k) for k in keys):
            return (f' It is a {self.sibling} checkpoint: load it into '
                    f"type='{self.sibling}'.")
        return ''

    def convert(self, state_dict: Mapping, keep_head: bool = False):
        hint = '' if self.is_official(state_dict) else self._sibling_hint(
            state_dict)
        if hint:
            raise CheckpointFormatError(
                f'this is not an official {self.family} checkpoint.' + hint)
        return super().convert(state_dict, keep_head)

    def _foreign_message(self, local: Mapping) -> str:
        return super()._foreign_message(local) + self._sibling_hint(local)


def _stage_rules(stage: int, with_pos_embed: bool):
    """Rules for the patch embedding and blocks of official stage
    ``stage`` (1-based)."""
    embed = 'stem' if stage == 1 else f'stages.{stage - 1}.downsample'
    blocks = rf'stages.{stage - 1}.blocks.\1.'
    rules = [(rf'^patch_embed{stage}\.', f'{embed}.')]
    if with_pos_embed:
        rules.append((rf'^pos_embed{stage}$', f'{embed}.pos_embed'))
    else:
        rules.append((rf'^block{stage}\.(\d+)\.mlp\.dwconv\.dwconv\.',
                      blocks + 'mlp.dwconv.'))
    # Everything of a block but spatial-reduction keys.
    rules.append((rf'^block{stage}\.(\d+)\.(?!attn\.(sr|norm)\.)', blocks))
    return rules


HEAD_RULES = [(r'^head\.', 'head.fc.')]

FLATTEN_PVT_CONVERTER = PVTFamilyConverter(
    family='FLattenPVT',
    official_pattern=PVT_OFFICIAL,
    own_pattern=PVT_OWN,
    rules=[
        rule for stage in range(1, 5)
        for rule in _stage_rules(stage, with_pos_embed=True)
    ] + [(r'^norm\.', None)],
    head_rules=HEAD_RULES,
    convert_command='tools/model_converters/flatten2mmdet.py --family pvt',
    sibling='FLattenPVTv2',
    sibling_pattern=f'{PVT_V2_OFFICIAL}|{PVT_V2_OWN}',
)

FLATTEN_PVT_V2_CONVERTER = PVTFamilyConverter(
    family='FLattenPVTv2',
    official_pattern=PVT_V2_OFFICIAL,
    own_pattern=PVT_V2_OWN,
    rules=[
        rule for stage in range(1, 5)
        for rule in _stage_rules(stage, with_pos_embed=False)
    ] + [(rf'^norm{stage}\.', f'norm{stage - 1}.') for stage in range(1, 5)],
    head_rules=HEAD_RULES,
    convert_command=('tools/model_converters/flatten2mmdet.py --family '
                     'pvt_v2'),
    sibling='FLattenPVT',
    sibling_pattern=f'{PVT_OFFICIAL}|{PVT_OWN}',
)
