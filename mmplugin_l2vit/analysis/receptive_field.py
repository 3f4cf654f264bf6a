# Copyright (c) OpenMMLab. All rights reserved.
"""Gradient-based effective receptive fields (Luo et al., NeurIPS 2016).

The effective receptive field of an output map is the magnitude of the
gradient of its centre pixel with respect to the input image, summed over
the image's channels and averaged over images. The centre pixel's channels
are ReLU'd before they are summed, as in RepLKNet's ERF script: a plain sum
over the channels of a LayerNorm output is constant up to its affine
parameters (exactly so at initialisation), so its gradient would vanish.
"""
from typing import Callable, Iterable, List, Sequence

import torch

# The areas the one-line summary reports.
MASS_FRACTIONS = (0.5, 0.9)


def centre_gradients(model: Callable[[torch.Tensor], Sequence[torch.Tensor]],
                     image: torch.Tensor) -> List[torch.Tensor]:
    """``|d sum_c ReLU(out[c, h // 2, w // 2]) / d image|``, summed over the
    image channels, for each ``(1, C, h, w)`` output of ``model(image)``.

    Args:
        model (Callable): Maps a ``(1, 3, H, W)`` image to a sequence of
            feature maps, e.g. a backbone in eval mode.
        image (Tensor): ``(1, 3, H, W)`` normalised image.

    Returns:
        list[Tensor]: One ``(H, W)`` map per output.
    """
    with torch.enable_grad():
        image = image.detach().requires_grad_()
        outputs = model(image)
        maps = []
        for i, out in enumerate(outputs):
            height, width = out.shape[-2:]
            grad, = torch.autograd.grad(
                out[0, :, height // 2, width // 2].relu().sum(),
                image,
                retain_graph=i + 1 < len(outputs))
            maps.append(grad[0].abs().sum(0))
    return maps


def effective_receptive_field(
        model: Callable[[torch.Tensor], Sequence[torch.Tensor]],
        images: Iterable[torch.Tensor]) -> List[torch.Tensor]:
    """:func:`centre_gradients` averaged over images of one size.

    Returns:
        list[Tensor]: One ``(H, W)`` map per output of ``model``.
    """
    total, count = None, 0
    for image in images:
        maps = centre_gradients(model, image)
        total = maps if total is None else [
            t + m for t, m in zip(total, maps)
        ]
        count += 1
    if not count:
        raise ValueError('effective_receptive_field needs at least one image')
    return [t / count for t in total]


def mass_area(gradient: torch.Tensor, fraction: float) -> int:
    """The fewest pixels that hold ``fraction`` of the gradient mass."""
    values = gradient.flatten().sort(descending=True).values
    cumulative = values.cumsum(0)
    count = int(torch.searchsorted(cumulative, fraction * cumulative[-1])) + 1
    return min(count, values.numel())


def mass_share(gradient: torch.Tensor, fraction: float) -> float:
    """:func:`mass_area` as a share of the image."""
    return mass_area(gradient, fraction) / gradient.numel()


def log_heat_map(gradient: torch.Tensor,
                 floor: float = 1e-4) -> torch.Tensor:
    """``log10(gradient / max)`` clipped at ``log10(floor)``: 0 at the
    strongest pixel, ``log10(floor)`` where the gradient is negligible."""
    return torch.log10((gradient / gradient.max()).clamp(min=floor))


def summary_line(name: str, gradients: Sequence[torch.Tensor]) -> str:
    """One line: for each map, the areas that hold 50% and 90% of the
    gradient mass, in pixels and as shares of the image."""

    def area(gradient, fraction):
        return f'{fraction:.0%} in {mass_area(gradient, fraction)} px ' \
            f'({100 * mass_share(gradient, fraction):.2g}%)'

    return f'{name}: ' + '; '.join(
        f'stage {i}: ' + ', '.join(area(g, f) for f in MASS_FRACTIONS)
        for i, g in enumerate(gradients))
