"""Loading official BiFormer checkpoints into :class:`biformer_mm.BiFormer`."""
import re
from collections import OrderedDict
from typing import Dict, Mapping

import torch
from torch import Tensor

# (official pattern, our replacement), applied in order to every key.
_KEY_RULES = (
    (r'^downsample_layers\.0\.', 'stem.'),
    (r'^downsample_layers\.(\d+)\.', lambda m: f'downsamples.{int(m.group(1)) - 1}.'),
    (r'\.attn\.qkv\.qkv\.', '.attn.qkv.'),
    (r'\.attn\.wo\.', '.attn.proj.'),
    (r'\.mlp\.0\.', '.mlp.fc1.'),
    (r'\.mlp\.3\.', '.mlp.fc2.'),
    (r'^extra_norms\.(\d+)\.', r'out_norms.\1.'),
)
# Classification-only parts of the official models.
_DROPPED = re.compile(r'^(head|norm|pre_logits)\.')


def _unwrap(checkpoint: Mapping) -> Mapping[str, Tensor]:
    """Strip ``state_dict``/``model`` wrappers and ``module.``/``backbone.`` prefixes."""
    while True:
        for key in ('state_dict', 'model'):
            if isinstance(checkpoint.get(key), Mapping):
                checkpoint = checkpoint[key]
                break
        else:
            break
    state_dict = OrderedDict((re.sub(r'^module\.', '', k), v) for k, v in checkpoint.items())
    if any(k.startswith('backbone.') for k in state_dict):
        state_dict = OrderedDict((k[len('backbone.'):], v) for k, v in state_dict.items()
                                 if k.startswith('backbone.'))
    return state_dict


def convert_official_state_dict(state_dict: Mapping) -> Dict[str, Tensor]:
    """Map an official BiFormer state dict to :class:`biformer_mm.BiFormer` keys.

    Accepts the official classification checkpoints (``downsample_layers.*``,
    ``stages.*``, with the ``head.*`` classifier and final ``norm.*`` dropped), the
    official dense-prediction layout (``extra_norms.*``), whole detector/segmentor
    checkpoints (only ``backbone.*`` kept) and checkpoints already in our layout, with or
    without ``model``/``state_dict`` wrappers and ``module.`` prefixes.

    Args:
        state_dict (Mapping): A loaded checkpoint or state dict.

    Returns:
        dict[str, Tensor]: The state dict in our layout.
    """
    converted = OrderedDict()
    for key, value in _unwrap(state_dict).items():
        if _DROPPED.match(key):
            continue
        for pattern, replacement in _KEY_RULES:
            key = re.sub(pattern, replacement, key)
        converted[key] = value
    return converted


def load_checkpoint_file(path: str) -> Mapping:
    """Load a checkpoint file onto the CPU.

    Official BiFormer checkpoints pickle training arguments (``argparse.Namespace``)
    next to the weights, which ``torch.load``'s default ``weights_only=True`` rejects;
    the file is one the user named in a config, so it is loaded in full.

    Args:
        path (str): Local checkpoint path.

    Returns:
        Mapping: The loaded object.
    """
    return torch.load(path, map_location='cpu', weights_only=False)
