"""Loading official BiFormer checkpoints (and ours) into :class:`biformer_mm.BiFormer` and
the timm classifiers."""
import logging
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping

import torch.nn as nn
from mmengine.logging import print_log
from torch import Tensor

OFFICIAL_WEIGHTS = 'https://github.com/rayleizhu/BiFormer'
"""Where the official ImageNet-1k checkpoints ``biformer_{tiny,small,base}_best.pth``
are published."""
DOWNLOAD_OFFICIAL_WEIGHTS = (f'Download the official ImageNet-1k weights '
                             f'(biformer_{{tiny,small,base}}_best.pth, linked from '
                             f'{OFFICIAL_WEIGHTS})')

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
_CLASSIFIER = re.compile(r'^(head|norm|pre_logits)\.')


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model it is loaded into."""


def _unwrap(checkpoint: Mapping) -> Mapping[str, Tensor]:
    """Strip ``state_dict``/``model`` wrappers and ``module.`` prefixes."""
    wrapped = [k for k in ('state_dict', 'model') if isinstance(checkpoint.get(k), Mapping)]
    if wrapped:
        return _unwrap(checkpoint[wrapped[0]])
    return OrderedDict((re.sub(r'^module\.', '', k), v) for k, v in checkpoint.items())


def select_prefix(state_dict: Mapping[str, Tensor], prefix: str) -> Dict[str, Tensor]:
    """The entries of ``state_dict`` under ``prefix``, with the prefix removed.

    Args:
        state_dict (Mapping): A loaded checkpoint or state dict (wrappers allowed).
        prefix (str): Key prefix, e.g. ``'backbone.'`` (a missing final dot is added).

    Raises:
        KeyError: If no key starts with ``prefix``.
    """
    state_dict = _unwrap(state_dict)
    prefix = prefix if prefix.endswith('.') else prefix + '.'
    selected = OrderedDict((k[len(prefix):], v) for k, v in state_dict.items()
                           if k.startswith(prefix))
    if not selected:
        heads = sorted({k.split('.')[0] + '.' for k in state_dict})
        raise KeyError(f'No key of the checkpoint starts with prefix {prefix!r}; its keys '
                       f'start with {heads[:10]}. Fix init_cfg.prefix or drop it.')
    return selected


def convert_official_state_dict(state_dict: Mapping,
                                keep_classifier: bool = False) -> Dict[str, Tensor]:
    """Map an official BiFormer state dict to :class:`biformer_mm.BiFormer` keys.

    Accepts the official classification checkpoints (``downsample_layers.*``,
    ``stages.*``), the official dense-prediction layout (``extra_norms.*``), whole
    detector/segmentor checkpoints (only ``backbone.*`` is kept) and checkpoints already
    in our layout, with or without ``model``/``state_dict`` wrappers and ``module.``
    prefixes.

    Args:
        state_dict (Mapping): A loaded checkpoint or state dict.
        keep_classifier (bool): Keep the classification ``head.*``, final ``norm.*``
            and ``pre_logits.*`` (for the timm classifier) instead of dropping them.
            Defaults to False.

    Returns:
        dict[str, Tensor]: The state dict in our layout.
    """
    state_dict = _unwrap(state_dict)
    if any(k.startswith('backbone.') for k in state_dict):
        state_dict = select_prefix(state_dict, 'backbone.')
    converted = OrderedDict()
    for key, value in state_dict.items():
        if not keep_classifier and _CLASSIFIER.match(key):
            continue
        for pattern, replacement in _KEY_RULES:
            key = re.sub(pattern, replacement, key)
        converted[key] = value
    return converted


def _listing(keys: List[str], limit: int = 8) -> str:
    more = f' ... ({len(keys) - limit} more)' if len(keys) > limit else ''
    return ', '.join(keys[:limit]) + more


def load_converted_state_dict(model: nn.Module,
                              state_dict: Mapping[str, Tensor],
                              source: str,
                              optional: Callable[[str], bool],
                              ignored: Callable[[str], bool] = lambda key: False,
                              strict: bool = True,
                              fix: str = '',
                              check_only: bool = False) -> None:
    """Load a state dict in our layout into ``model``, loudly.

    Every model key must be in ``state_dict`` with its shape, except ``optional`` ones;
    every ``state_dict`` key must be in the model, except ``ignored`` ones. With
    ``strict`` any violation raises, naming the counts, the first keys and ``fix``;
    without it the keys that fit are loaded and the rest is logged as a warning.

    Args:
        model (nn.Module): Model to load into.
        state_dict (Mapping): State dict in the model's layout.
        source (str): Where it came from, for messages.
        optional (Callable[[str], bool]): Model keys the checkpoint may lack.
        ignored (Callable[[str], bool]): Checkpoint keys the model may lack.
        strict (bool): Raise on any missing, unexpected or mismatched key.
            Defaults to True.
        fix (str): How to fix a failure, appended to the error.
        check_only (bool): Only check, load nothing (timm's checkpoint filter: timm
            loads). Defaults to False.

    Raises:
        CheckpointMismatchError: With ``strict``, if any key is missing, unexpected or
            mismatched.
    """
    own = model.state_dict()
    absent = [k for k in own if k not in state_dict]
    missing = [k for k in absent if not optional(k)]
    unexpected = [k for k in state_dict if k not in own and not ignored(k)]
    mismatched = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f'{len(missing)} of the model\'s {len(own)} tensors are missing '
                        f'from the checkpoint: {_listing(missing)}')
    if mismatched:
        problems.append(f'{len(mismatched)} shape mismatches:\n  ' +
                        '\n  '.join(mismatched[:8]))
    if unexpected:
        problems.append(f'{len(unexpected)} checkpoint tensors have no place in the '
                        f'model: {_listing(unexpected)}')
    name = type(model).__name__
    if problems and strict:
        raise CheckpointMismatchError(f'{source} does not fit this {name}. ' + '; '.join(problems) +
                         f'. {fix}'.rstrip())
    if check_only:
        return
    loaded = {k: v for k, v in state_dict.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(loaded, strict=False)
    summary = f'Loaded {len(loaded)} of {len(own)} tensors of {name} from {source}'
    optional_missing = [k for k in absent if optional(k)]
    if optional_missing:
        summary += f'; left as initialised: {_listing(optional_missing)}'
    if problems:
        print_log(f'{summary}. Partial load (strict=False): ' + '; '.join(problems),
                  logger='current', level=logging.WARNING)
    else:
        print_log(summary, logger='current')


def check_trained_checkpoint(model: nn.Module, checkpoint: Mapping, source: str,
                             config: str) -> None:
    """Raise unless ``checkpoint``, a whole detector's or segmentor's (as mmengine saves
    it, or its bare state dict), fits ``model`` key for key and shape for shape.
    mmengine's Runner (``load_from``) and the mmdet/mmseg inferencers load non-strictly:
    they print what does not fit and go on with those tensors as initialised.

    Raises:
        CheckpointMismatchError: Naming the keys that do not fit, and ``config``.
    """
    state_dict = checkpoint.get('state_dict', checkpoint)
    # As mmengine's load_checkpoint (revise_keys): a wrapped model's keys.
    state_dict = {re.sub(r'^module\.', '', key): value for key, value in state_dict.items()}
    load_converted_state_dict(
        model, state_dict, source, optional=lambda key: False, check_only=True,
        fix=f'Give a checkpoint trained with {config}, or the config it was trained with '
            f'(the same model, heads with its num_classes).')
