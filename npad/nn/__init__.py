"""Layers and models (torch.nn names): Module, Parameter, Linear, containers,
normalisation, activations; convolution and image layers in nn.conv; losses in nn.loss."""
from . import init
from .module import Module, Parameter
from .layers import (Identity, Linear, Sequential, ModuleList, ModuleDict, Dropout, Embedding, LayerNorm,
                     ReLU, ReLU6, LeakyReLU, Sigmoid, Tanh, Softplus, SiLU, GELU, Hardswish,
                     Hardsigmoid, ELU, Softmax, LogSoftmax)
from . import functional  # noqa: F401  (npad.nn.functional, as torch.nn.functional)
from . import utils  # noqa: F401  (npad.nn.utils.clip_grad_norm_)
from .transformer import MultiheadAttention, TransformerEncoderLayer, TransformerDecoderLayer, scaled_dot_product_attention
from .conv import (Conv1d, Conv2d, ConvTranspose2d, BatchNorm1d, BatchNorm2d, GroupNorm, InstanceNorm2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Upsample, Flatten, Unflatten, ZeroPad2d)
from .loss import (MSELoss, L1Loss, SmoothL1Loss, BCELoss, BCEWithLogitsLoss, NLLLoss, CrossEntropyLoss)
