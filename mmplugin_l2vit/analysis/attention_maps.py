# Copyright (c) OpenMMLab. All rights reserved.
"""The attention weights of chosen query tokens over all keys, for any block
whose kind has registered how to draw its rows.

One forward pass runs the image up to the chosen block, forward hooks keep
the inputs and outputs of the modules the block's :class:`AttentionRows`
asks for, and it recomputes the rows from them for the chosen queries only,
so memory stays linear in the number of tokens.

A block kind is drawn by a subclass of :class:`AttentionRows` (or any
callable that returns one for a block, or None for a block it does not
draw) registered for the block's class::

    @register_attention_rows(MyBlock)
    class MyBlockRows(AttentionRows):
        kind = 'my attention'

        def modules(self):
            return [self.block.attn]

        def rows(self, calls, query_indices, compare):
            (x, hw), _ = calls[self.block.attn]
            ...
            return Rows(rows, unattended)

A backbone is drawn block by block as ``backbone.stages[S].blocks[B]``;
nothing here names a block class. The plugin's own blocks are registered in
:mod:`.block_rows`.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn as nn

from ..models.layers.tokens import HW


@dataclass
class AttentionMaps:
    """Attention rows of some query tokens in one block.

    Attributes:
        layer (str): ``'STAGE.BLOCK'``, both 0-based.
        kind (str): What the block computes.
        grid (tuple[int, int]): The block's token grid ``(H, W)``.
        queries (list[tuple[int, int]]): ``(row, col)`` of each query on the
            grid.
        rows (Tensor): ``(Q, heads, H, W)`` weights of each query over the
            keys of the map.
        unattended (Tensor): ``(Q, heads)``: one minus the row's sum, the
            weight on zero-padded keys outside the map or the share lost to
            a normaliser's floor or eps; see ``unattended_reason``.
        unattended_reason (str): Where ``unattended`` goes.
        local (Tensor, optional): ``(Q, H, W)`` normalised influence of the
            convolution branch beside the attention (LCM, DWC, LePE).
        local_name (str, optional): Name of that branch.
        local_share (Tensor, optional): ``(Q,)`` the branch's share
            ``|local| / (|local| + |attention|)`` of the two outputs at the
            query, where they are added.
        variants (dict[str, Tensor]): With ``compare=True`` on a block that
            has them: ``(Q, heads, H, W)`` rows of other attentions with the
            block's own queries and keys (softmax, plain ReLU linear) and of
            the block's own.
    """
    layer: str
    kind: str
    grid: HW
    queries: List[Tuple[int, int]]
    rows: torch.Tensor
    unattended: torch.Tensor
    unattended_reason: str
    local: Optional[torch.Tensor] = None
    local_name: Optional[str] = None
    local_share: Optional[torch.Tensor] = None
    variants: Dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Rows:
    """What :meth:`AttentionRows.rows` computes, on flattened ``(…, N)``
    key axes; see :class:`AttentionMaps` for each field."""
    rows: torch.Tensor
    unattended: torch.Tensor
    local: Optional[torch.Tensor] = None
    local_share: Optional[torch.Tensor] = None
    variants: Dict[str, torch.Tensor] = field(default_factory=dict)


class AttentionRows:
    """How one block draws its attention rows.

    Subclasses set ``kind``, and where it applies ``unattended_reason``,
    ``local_name`` (the convolution branch beside the attention) and
    ``has_variants`` (``compare=True`` is supported); they may set them per
    block in ``__init__``.

    Args:
        block (nn.Module): The block to draw.
    """
    kind = ''
    unattended_reason = 'weight on zero-padded keys outside the map'
    local_name: Optional[str] = None
    has_variants = False

    def __init__(self, block: nn.Module):
        self.block = block

    def modules(self) -> List[nn.Module]:
        """Modules whose ``(args, output)`` :meth:`rows` reads; the first
        one's last argument is the token grid unless :meth:`grid` says
        otherwise."""
        raise NotImplementedError

    def grid(self, calls: Dict[nn.Module, tuple]) -> HW:
        """The block's token grid ``(H, W)``."""
        args, _ = calls[self.modules()[0]]
        return tuple(args[-1])

    def rows(self, calls: Dict[nn.Module, tuple], query_indices: List[int],
             compare: bool) -> Rows:
        """Rows of the queries at row-major ``query_indices`` of the grid,
        from ``calls[module] = (args, output)`` of one forward pass."""
        raise NotImplementedError


RowsFactory = Callable[[nn.Module], Optional[AttentionRows]]
_ROWS_BY_BLOCK: Dict[type, RowsFactory] = {}


def register_attention_rows(*block_types: Type[nn.Module],
                            force: bool = False):
    """Register how blocks of ``block_types`` (and their subclasses, unless
    registered themselves) draw their attention rows.

    Decorates a subclass of :class:`AttentionRows` or a function ``block ->
    AttentionRows | None`` (None: that block is not drawn).

    Args:
        *block_types (type): Block classes.
        force (bool): Replace an earlier registration. Default: False.
    """

    def register(factory: RowsFactory) -> RowsFactory:
        for block_type in block_types:
            if block_type in _ROWS_BY_BLOCK and not force:
                raise KeyError(f'attention rows of {block_type.__name__} '
                               'are registered already (force=True '
                               'replaces them)')
            _ROWS_BY_BLOCK[block_type] = factory
        return factory

    return register


def attention_rows_of(block: nn.Module) -> Optional[AttentionRows]:
    """The registered :class:`AttentionRows` of ``block`` (that of its
    nearest registered class), or None."""
    for block_type in type(block).__mro__:
        if block_type in _ROWS_BY_BLOCK:
            return _ROWS_BY_BLOCK[block_type](block)
    return None


def _drawn_blocks(backbone: nn.Module) -> Dict[str, AttentionRows]:
    drawn = {}
    for i, stage in enumerate(getattr(backbone, 'stages', [])):
        for j, block in enumerate(getattr(stage, 'blocks', [])):
            rows = attention_rows_of(block)
            if rows is not None:
                drawn[f'{i}.{j}'] = rows
    if not drawn:
        raise ValueError(
            f'{type(backbone).__name__} has no blocks (backbone.stages[S]'
            '.blocks[B]) whose attention rows are registered; see '
            'register_attention_rows')
    return drawn


def list_layers(backbone: nn.Module) -> Dict[str, str]:
    """``{'STAGE.BLOCK': kind}`` for every drawable block of a backbone
    (0-based indices, ``backbone.stages[STAGE].blocks[BLOCK]``)."""
    return {name: rows.kind for name, rows in _drawn_blocks(backbone).items()}


def _rows_of_layer(backbone: nn.Module, layer: str) -> AttentionRows:
    drawn = _drawn_blocks(backbone)
    if layer not in drawn:
        valid = ', '.join(f'{name} ({rows.kind})'
                          for name, rows in drawn.items())
        raise ValueError(f'unknown layer {layer!r} of '
                         f'{type(backbone).__name__}; valid layers '
                         f'(STAGE.BLOCK) are: {valid}')
    return drawn[layer]


def check_points(points: Sequence[Tuple[int, int]], image_hw: HW) -> None:
    """Raise a ValueError for an ``(x, y)`` point outside an image of
    ``image_hw``, naming the valid ranges."""
    height, width = image_hw
    for x, y in points:
        if not (0 <= x < width and 0 <= y < height):
            raise ValueError(
                f'query ({x}, {y}) is outside the {width}x{height} image; '
                f'valid queries are X in [0, {width - 1}] and Y in '
                f'[0, {height - 1}]')


class _StopForward(Exception):
    """Raised after the drawn block: the rest of the network is not
    needed."""


def _capture(backbone: nn.Module, image: torch.Tensor,
             drawer: AttentionRows) -> Dict[nn.Module, tuple]:
    """Run ``backbone(image)`` up to the drawn block and return
    ``{module: (args, output)}`` of the modules the drawer reads."""
    calls = {}

    def save(module, args, output):
        calls.setdefault(module, (args, output))

    def stop(module, args, output):
        raise _StopForward

    handles = [m.register_forward_hook(save) for m in drawer.modules()]
    # Registered last, so the block's own ``save`` runs before it.
    handles.append(drawer.block.register_forward_hook(stop))
    try:
        with torch.no_grad():
            backbone(image)
    except _StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return calls


@torch.no_grad()
def attention_maps(backbone: nn.Module,
                   image: torch.Tensor,
                   layer: str,
                   points: Sequence[Tuple[int, int]],
                   compare: bool = False) -> AttentionMaps:
    """The attention rows of the tokens under some image points.

    Args:
        backbone (nn.Module): A backbone in eval mode whose blocks' rows
            are registered (all of the plugin's).
        image (Tensor): ``(1, 3, H, W)`` normalised image.
        layer (str): ``'STAGE.BLOCK'``, see :func:`list_layers`.
        points (Sequence[tuple[int, int]]): ``(x, y)`` pixels of ``image``;
            each selects the token whose cell holds it.
        compare (bool): Also compute the rows of other attentions with the
            block's queries and keys (blocks with ``has_variants``: the
            linear ones).

    Returns:
        AttentionMaps: The rows and what goes with them.
    """
    drawer = _rows_of_layer(backbone, layer)
    if compare and not drawer.has_variants:
        comparable = [
            name for name, rows in _drawn_blocks(backbone).items()
            if rows.has_variants
        ]
        raise ValueError(f'compare needs a linear-attention layer; {layer} '
                         f'is {drawer.kind}. Linear layers of '
                         f'{type(backbone).__name__}: '
                         f'{", ".join(comparable)}')
    if not points:
        raise ValueError('attention_maps needs at least one query point')
    image_hw = tuple(image.shape[-2:])
    check_points(points, image_hw)
    calls = _capture(backbone, image, drawer)
    hw = drawer.grid(calls)
    queries = [(y * hw[0] // image_hw[0], x * hw[1] // image_hw[1])
               for x, y in points]
    result = drawer.rows(calls, [r * hw[1] + c for r, c in queries], compare)

    def as_maps(rows):
        return rows.reshape(*rows.shape[:-1], *hw)

    return AttentionMaps(
        layer=layer,
        kind=drawer.kind,
        grid=hw,
        queries=queries,
        rows=as_maps(result.rows),
        unattended=result.unattended,
        unattended_reason=drawer.unattended_reason,
        local=None if result.local is None else as_maps(result.local),
        local_name=drawer.local_name,
        local_share=result.local_share,
        variants={
            name: as_maps(rows)
            for name, rows in result.variants.items()
        })
