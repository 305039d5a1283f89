"""The rest of the CAM family: each variant is Grad-CAM with one or two lines of ``combine`` changed.

With A the layer's activation and g = dy^c/dA (both (N, C, h, w)), the
template (:mod:`xai_helpers.methods.cam_template`) computes ReLU, upsampling
and min-max scaling of a map; the variants differ only in the map:

================  =========================================  ==================================
method            weight of A^k at position (i, j)           map before the final ReLU
================  =========================================  ==================================
Grad-CAM          mean_ab g^k_ab (one per channel)           sum_k w_k A^k
XGrad-CAM         sum_ab A^k_ab g^k_ab / sum_ab A^k_ab        sum_k w_k A^k
HiResCAM          g^k_ij (one per position)                  sum_k g^k ⊙ A^k
element-wise      g^k_ij                                     sum_k ReLU(g^k ⊙ A^k)
LayerCAM          ReLU(g^k_ij)                               sum_k ReLU(g^k) ⊙ A^k
EigenCAM          none: class-agnostic                       first principal component of A
Eigen-Grad-CAM    none                                       first principal component of g ⊙ A
================  =========================================  ==================================
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..engine import ReshapeTransform, Target, layer_pass, normalize_per_image
from ..engine.inputs import number
from .aug_smooth import with_aug_smooth
from .cam_template import (
    first_principal_component,
    layer_heatmap,
    reduce_channels,
    weighted_sum,
)

__all__ = [
    "eigen_cam",
    "eigen_grad_cam",
    "first_principal_component",
    "grad_cam_elementwise",
    "hires_cam",
    "layer_cam",
    "layer_cam_fusion",
    "layer_cam_map",
    "layer_cam_terms",
    "xgrad_cam",
    "xgrad_cam_weights",
]


def xgrad_cam_weights(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM channel weights (N, C): alpha_k = sum_ij (A^k_ij / sum_ab A^k_ab) g^k_ij.

    The gradient averaged with the activation's own spatial distribution as
    weights instead of Grad-CAM's uniform 1/Z. A channel whose activations
    sum to 0 gets weight 0 (pytorch-grad-cam and torchcam add 1e-7 and 1e-8
    to the denominator instead).
    """
    total = activation.sum((2, 3))
    weighted = (activation * grads).sum((2, 3))
    nonzero = total != 0
    return torch.where(nonzero, weighted / torch.where(nonzero, total, torch.ones_like(total)), 0.0)


@with_aug_smooth
def xgrad_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module, target: Target = None, *,
              reshape_transform: ReshapeTransform = None, eigen_smooth: bool = False) -> torch.Tensor:
    """XGrad-CAM (Fu et al. 2020, "Axiom-based Grad-CAM", BMVC; equation numbers not checked here).

    .. math::
        L^c = \\mathrm{ReLU}\\Big(\\sum_k \\alpha_k^c A^k\\Big), \\qquad
        \\alpha_k^c = \\sum_{i,j} \\frac{A^k_{ij}}{\\sum_{a,b} A^k_{ab}}\\,
        \\frac{\\partial y^c}{\\partial A^k_{ij}}

    the weights that satisfy the paper's sensitivity and conservation axioms
    as nearly as possible (its closed-form solution). Equal to CAM on a
    GAP -> Linear head, where g^k is constant over the map. Args and returns
    as :func:`xai_helpers.grad_cam`.
    """
    return layer_heatmap(model, x, layer, target,
                         lambda a, g: weighted_sum(xgrad_cam_weights(a, g), a, eigen_smooth),
                         reshape_transform=reshape_transform)


@with_aug_smooth
def hires_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module, target: Target = None, *,
              reshape_transform: ReshapeTransform = None, eigen_smooth: bool = False) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful explanations";
    equation numbers not checked here).

    .. math::
        L^c = \\mathrm{ReLU}\\Big(\\sum_k \\frac{\\partial y^c}{\\partial A^k} \\odot A^k\\Big)

    Grad-CAM without the averaging of the gradient: each position keeps its
    own gradient. When the layer is followed by one Linear layer (flattening
    or pooling first), sum_k g^k ⊙ A^k is exactly each position's share of
    the logit, less the bias, which is the paper's faithfulness guarantee;
    on a GAP -> Linear head it equals CAM. The ReLU is the template's (and
    pytorch-grad-cam's). Args and returns as :func:`xai_helpers.grad_cam`.
    """
    return layer_heatmap(model, x, layer, target, lambda a, g: reduce_channels(g * a, eigen_smooth),
                         reshape_transform=reshape_transform)


@with_aug_smooth
def grad_cam_elementwise(model: nn.Module, x: torch.Tensor, layer: nn.Module, target: Target = None, *,
                         reshape_transform: ReshapeTransform = None, eigen_smooth: bool = False) -> torch.Tensor:
    """Grad-CAM element-wise, pytorch-grad-cam's ``GradCAMElementWise`` (no paper; the library: Gildenblat and
    contributors 2021).

    .. math::
        L^c = \\sum_k \\mathrm{ReLU}\\Big(\\frac{\\partial y^c}{\\partial A^k} \\odot A^k\\Big)

    HiResCAM with the ReLU moved inside the sum: a negative contribution of
    one channel no longer cancels a positive one of another at the same
    position. Args and returns as :func:`xai_helpers.grad_cam`.
    """
    return layer_heatmap(model, x, layer, target, lambda a, g: reduce_channels((g * a).clamp_min(0), eigen_smooth),
                         reshape_transform=reshape_transform)


def layer_cam_terms(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """ReLU(g^k) ⊙ A^k: LayerCAM's (N, C, h, w) terms."""
    return grads.clamp_min(0) * activation


def layer_cam_map(activation: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """sum_k ReLU(g^k) ⊙ A^k: LayerCAM's map before its ReLU, (N, h, w)."""
    return layer_cam_terms(activation, grads).sum(1)


@with_aug_smooth
def layer_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module, target: Target = None, *,
              reshape_transform: ReshapeTransform = None, eigen_smooth: bool = False) -> torch.Tensor:
    """LayerCAM (Jiang, Zhang, Hou, Cheng, Wei 2021, IEEE TIP, the map of one layer; equation numbers not
    checked here).

    .. math::
        w^{kc}_{ij} = \\mathrm{ReLU}\\Big(\\frac{\\partial y^c}{\\partial A^k_{ij}}\\Big), \\qquad
        L^c = \\mathrm{ReLU}\\Big(\\sum_k w^{kc} \\odot A^k\\Big)

    Each position weighted by its own positive gradient, so a layer whose
    gradient varies over the map (an early one) keeps that detail, which
    Grad-CAM's spatial mean averages away. On a GAP -> Linear head g^k is the
    class weight W_ck / Z everywhere, and a negative W_ck becomes 0: LayerCAM
    is then CAM without its negatively weighted channels. Several layers:
    :func:`layer_cam_fusion`. Args and returns as :func:`xai_helpers.grad_cam`.
    """
    return layer_heatmap(model, x, layer, target,
                         lambda a, g: reduce_channels(layer_cam_terms(a, g), eigen_smooth),
                         reshape_transform=reshape_transform)


def layer_cam_fusion(model: nn.Module, x: torch.Tensor, layers: Sequence[nn.Module], target: Target = None, *,
                     gamma: float = 2.0, reshape_transform: ReshapeTransform = None) -> torch.Tensor:
    """LayerCAM maps of several layers fused into one (Jiang et al. 2021, their fusion of layers).

    Each layer's map M_l = ReLU(sum_k ReLU(g^k) ⊙ A^k) is scaled as
    M_l <- tanh(gamma * M_l / max M_l), the paper's scaling of shallow layers
    (torchcam cites it as Eq. 9, with gamma = 2), upsampled to the input's
    size, and the layers are fused by the element-wise maximum; the result is
    min-max scaled per image. An all-zero layer map stays 0. One forward and
    one backward pass per layer. torchcam's ``fuse_cams`` applies
    tanh(gamma * M) to the maps it is given, which its extractor returns
    min-max normalised by default (max + 1e-8; equal to M / max M when the
    map's minimum is 0, as after the ReLU it almost always is), fuses at the
    largest layer's size and does not rescale the result.

    Returns:
        (N, H, W) float32 heatmaps in [0, 1].
    """
    gamma = number("gamma", gamma, low=0.0, low_open=True)
    if isinstance(layers, nn.Module) or len(layers) == 0:
        raise ValueError("layers must be a non-empty list of modules, e.g. [model.features[4], model.features[6]]")
    fused = None
    for layer in layers:
        recorded = layer_pass(model, x, layer, target, reshape_transform=reshape_transform)
        m = layer_cam_map(recorded.activation, recorded.gradient).detach().float().clamp_min(0)
        top = m.flatten(1).amax(1).view(-1, 1, 1)
        scaled = torch.where(top > 0, torch.tanh(gamma * m / top.clamp_min(torch.finfo(m.dtype).tiny)), 0.0)
        up = F.interpolate(scaled.unsqueeze(1), size=x.shape[-2:], mode="bilinear", align_corners=False).squeeze(1)
        fused = up if fused is None else torch.maximum(fused, up)
    return normalize_per_image(fused)


@with_aug_smooth
def eigen_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module, target: Target = None, *,
              reshape_transform: ReshapeTransform = None) -> torch.Tensor:
    """EigenCAM (Muhammad & Yeasin 2020, "Eigen-CAM: Class Activation Map using Principal Components"; equation
    numbers not checked here).

    .. math::
        L = \\mathrm{ReLU}(M v_1), \\qquad M = A - \\bar A = U S V^\\top

    with A the (hw, C) activation of one image: the first principal
    component of the layer's channels (:func:`first_principal_component`).
    **Class-agnostic**: ``target`` is accepted for the common signature and
    checked, but not used, so every class gets the same map, and no gradient
    is computed (the registry marks it ``class_agnostic``).
    Differences from pytorch-grad-cam's ``EigenCAM``: it leaves the sign of
    v_1 to LAPACK, so its map can come out as the negative of this one (then
    mostly removed by the ReLU); here the sign rule is fixed. Args and
    returns as :func:`xai_helpers.grad_cam`.
    """
    # The target is checked (a bad one is refused, as by every method), then not used.
    return layer_heatmap(model, x, layer, target, lambda a, g: first_principal_component(a).float(),
                         reshape_transform=reshape_transform, gradient=False)


@with_aug_smooth
def eigen_grad_cam(model: nn.Module, x: torch.Tensor, layer: nn.Module, target: Target = None, *,
                   reshape_transform: ReshapeTransform = None) -> torch.Tensor:
    """Eigen-Grad-CAM, pytorch-grad-cam's ``EigenGradCAM`` (no paper; the library: Gildenblat and contributors
    2021): EigenCAM of g ⊙ A.

    .. math::
        L^c = \\mathrm{ReLU}(M v_1), \\qquad
        M = \\frac{\\partial y^c}{\\partial A} \\odot A - \\text{its mean over positions}

    The gradient makes it class-specific again. Sign rule as
    :func:`first_principal_component`. Args and returns as :func:`xai_helpers.grad_cam`.
    """
    return layer_heatmap(model, x, layer, target, lambda a, g: first_principal_component(g * a).float(),
                         reshape_transform=reshape_transform)
