"""Helpers for using ready-made (torchvision) networks with GHN-2.

:func:`adjust_net` applies the GHN-2 reference code's (ppuda's ``utils.adjust_net``)
changes that let ImageNet architectures process 32x32 images: the stem loses its
early downsampling (strides set to 1, the first max-pool removed, a 7x7 stem conv
becomes 3x3). It also sets ``model.expected_input_sz``, which
:func:`ghnas.graph.extract` reads to size its tracing input.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

__all__ = ["adjust_net"]


def _shrink_first_conv(conv: nn.Conv2d, ks: tuple[int, int] = (3, 3)) -> None:
    """Make a stem conv 3x3 / stride 1 / padding 1, keeping the centre of its kernel."""
    if conv.in_channels != 3:
        raise ValueError(f"expected the first convolution to read 3 channels, got {conv}")
    kh, kw = conv.weight.shape[2:]
    if (kh, kw) != ks:
        if kh < ks[0] or kw < ks[1]:
            raise ValueError(f"cannot shrink a {kh}x{kw} kernel to {ks[0]}x{ks[1]}")
        top, left = (kh - ks[0]) // 2, (kw - ks[1]) // 2
        with torch.no_grad():
            centre = conv.weight[:, :, top:top + ks[0], left:left + ks[1]].clone()
        conv.weight = nn.Parameter(centre, requires_grad=conv.weight.requires_grad)
    conv.kernel_size = ks
    conv.padding = (ks[0] // 2, ks[1] // 2)
    conv.stride = (1, 1)


def _stride_one(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            m.stride = (1, 1)


def adjust_net(model: nn.Module, large_input: bool = False) -> nn.Module:
    """Adapt a torchvision classifier to 32x32 inputs the way GHN-2's reference code does.

    The model is changed in place and returned. It always gets
    ``model.expected_input_sz`` (224 if ``large_input`` else 32). With
    ``large_input=True`` nothing else changes. Otherwise, per family:

    * ResNet (incl. ResNeXt / Wide ResNet): ``conv1`` becomes 3x3, stride 1, padding 1
      (its weight cropped to the kernel centre); ``maxpool`` becomes ``nn.Identity``.
    * DenseNet: the same for ``features[0]``; the max-pool ``features[3]`` is removed.
    * MobileNetV2 / V3: every convolution in ``features[:5]`` gets stride 1.
    * VGG: the max-pools among ``features[:10]`` are removed.
    * AlexNet: ``features[0]`` gets stride 1; the max-pool ``features[2]`` is removed.
    * MNASNet: ``layers[0]`` gets stride 1.
    * ShuffleNetV2: the convolution of ``conv1`` gets stride 1; ``maxpool`` is removed.
    * GoogLeNet: the convolution of ``conv1`` gets stride 1; ``maxpool1`` is removed.
    * ConvNeXt: the stem convolution gets stride 1.
    * anything else: unchanged, with a warning.

    (ppuda sets ``stride`` on the ShuffleNetV2 / GoogLeNet stem *wrappers*, which has no
    effect; here the convolution inside is changed, as intended. Strides never change
    the graph, so GHN-2 graphs are the same either way.)

    Args:
        model: a torchvision classification model.
        large_input: the inputs are large (224x224): only set ``expected_input_sz``.

    Returns:
        ``model`` itself.

    Example:
        >>> import torchvision
        >>> net = adjust_net(torchvision.models.resnet18(num_classes=10))
        >>> net.conv1, net.maxpool, net.expected_input_sz
        (Conv2d(3, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False), Identity(), 32)
    """
    import torchvision.models as tvm

    model.expected_input_sz = 224 if large_input else 32
    if large_input:
        return model

    if isinstance(model, tvm.ResNet):
        _shrink_first_conv(model.conv1)
        model.maxpool = nn.Identity()
    elif isinstance(model, tvm.DenseNet):
        _shrink_first_conv(model.features[0])
        if not isinstance(model.features[3], nn.MaxPool2d):
            raise ValueError(f"expected a max-pool at features[3] of the DenseNet, got {model.features[3]}")
        model.features[3] = nn.Identity()
    elif isinstance(model, (tvm.MobileNetV2, tvm.MobileNetV3)):
        for block in model.features[:5]:
            _stride_one(block)
    elif isinstance(model, tvm.VGG):
        for i, layer in enumerate(model.features[:10]):
            if isinstance(layer, nn.MaxPool2d):
                model.features[i] = nn.Identity()
    elif isinstance(model, tvm.AlexNet):
        model.features[0].stride = (1, 1)
        model.features[2] = nn.Identity()
    elif isinstance(model, tvm.MNASNet):
        model.layers[0].stride = (1, 1)
    elif isinstance(model, tvm.ShuffleNetV2):
        _stride_one(model.conv1)
        model.maxpool = nn.Identity()
    elif isinstance(model, tvm.GoogLeNet):
        _stride_one(model.conv1)
        model.maxpool1 = nn.Identity()
    elif isinstance(model, tvm.ConvNeXt):
        _stride_one(model.features[0][0])
    else:
        warnings.warn(f"adjust_net does not know {type(model).__name__}; it is left as it is "
                      f"and may lose accuracy on small inputs", stacklevel=2)
    return model
