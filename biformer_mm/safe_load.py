"""Reading checkpoint files without running code from them.

A checkpoint is a pickle, and unpickling an arbitrary pickle can run arbitrary code.
``torch.load(..., weights_only=True)`` only rebuilds tensors, containers and the types
on an allow-list, so every checkpoint biformer_mm reads goes through it:

- backbone weights (:func:`read_checkpoint`, used by ``init_cfg=dict(type='Pretrained')``)
  and the timm classifiers' pretrained weights (``pretrained_cfg_overlay=dict(file=...)``)
  allow only what the official BiFormer files hold besides tensors
  (:data:`OFFICIAL_CHECKPOINT_GLOBALS`);
- the training checkpoints mmengine's Runner reads (``--resume``, ``load_from``,
  ``tools/test.py``) are loaded by mmengine itself, through ``torch.load``'s default,
  which is ``weights_only=True`` from torch 2.6 on; :mod:`biformer_mm.engine` adds what
  mmengine, mmdet and mmseg put in those checkpoints to torch's allow-list.

A file that holds anything else is refused with :class:`UnsafeCheckpointError`, which
names the types. For a file you trust, the explicit opt-in is the ``trusted://`` prefix
(``trusted:///abs/path.pth`` or ``trusted://relative/path.pth``), accepted wherever a
checkpoint path is (``init_cfg.checkpoint``, ``load_from``, ``--resume``,
``tools/test.py``, the timm classifiers' ``file``): such a file is loaded in full (``weights_only=False``). See
``docs/checkpoints.md``.
"""
import argparse
import os.path as osp
import pickle
from typing import Any, Optional, Sequence, Union

import torch
from mmengine.runner import CheckpointLoader

TRUSTED_PREFIX = 'trusted://'
"""Prefix of a checkpoint path that the user trusts to be loaded in full."""

OFFICIAL_CHECKPOINT_GLOBALS = (argparse.Namespace, )
"""Non-tensor types of the official BiFormer checkpoints: the training arguments."""

MapLocation = Union[str, torch.device, None]


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds types that a weights-only load does not accept."""


def is_trusted(filename: str) -> bool:
    """Whether ``filename`` carries the :data:`TRUSTED_PREFIX` opt-in."""
    return filename.startswith(TRUSTED_PREFIX)


def strip_trusted(filename: str) -> str:
    """``filename`` without the :data:`TRUSTED_PREFIX` opt-in."""
    return filename[len(TRUSTED_PREFIX):] if is_trusted(filename) else filename


def is_local(filename: str) -> bool:
    """Whether ``filename`` is a local path (no ``scheme://`` of mmengine's backends)."""
    return '://' not in strip_trusted(filename)


@CheckpointLoader.register_scheme(prefixes=TRUSTED_PREFIX)
def load_trusted(filename: str, map_location: MapLocation = None) -> Any:
    """Load a local checkpoint named ``trusted://PATH`` in full (``weights_only=False``).

    Registered with mmengine's :class:`~mmengine.runner.CheckpointLoader` under its own
    prefix, so it changes nothing for other paths.

    Args:
        filename (str): ``trusted://`` followed by a local path.
        map_location (str | torch.device, optional): As for :func:`torch.load`.

    Returns:
        Any: The unpickled checkpoint.
    """
    path = osp.expanduser(strip_trusted(filename))
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint {path} (given as {filename}) does not exist '
                                f'(relative paths start at {osp.abspath(".")}).')
    return torch.load(path, map_location=map_location, weights_only=False)


def unsafe_globals(filename: str, allowed: Sequence[type] = ()) -> list:
    """Types a local checkpoint holds that a weights-only load would refuse.

    Args:
        filename (str): Local checkpoint path.
        allowed (Sequence[type]): Types allowed beyond torch's allow-list (its default
            and what ``torch.serialization.add_safe_globals`` added).

    Returns:
        list[str]: Fully qualified names, empty when the file loads weights-only.
    """
    with torch.serialization.safe_globals(list(allowed)):
        return torch.serialization.get_unsafe_globals_in_checkpoint(filename)


def unsafe_checkpoint_message(filename: str, types: Sequence[str],
                              where: str = 'the checkpoint path') -> str:
    """The error text for a checkpoint that needs more than the allow-list."""
    return (f'Checkpoint {filename} holds {", ".join(types) or "objects"} beyond the '
            f'weights-only allow-list, and unpickling those can run code. It was not '
            f'loaded. If you trust this file (you made it, or it comes from a source you '
            f'trust), load it in full by prefixing {where} with {TRUSTED_PREFIX!r}, e.g. '
            f'{TRUSTED_PREFIX}{filename} (see docs/checkpoints.md).')


def read_checkpoint(filename: str,
                    map_location: MapLocation = 'cpu',
                    allowed: Sequence[type] = OFFICIAL_CHECKPOINT_GLOBALS,
                    where: str = 'the checkpoint path') -> Any:
    """Read a checkpoint weights-only, from a local path, a URL or any mmengine backend.

    Local paths are read with ``torch.load(weights_only=True)``; other paths go through
    mmengine's :class:`~mmengine.runner.CheckpointLoader` (URLs are cached in torch's hub
    directory, the first rank downloading), whose loads are weights-only from torch 2.6
    on. ``allowed`` types are accepted for the duration of the call only. A
    ``trusted://`` path is loaded in full.

    Args:
        filename (str): Checkpoint path, URL or backend path.
        map_location (str | torch.device, optional): As for :func:`torch.load`.
            Defaults to ``'cpu'``.
        allowed (Sequence[type]): Non-tensor types to accept. Defaults to
            :data:`OFFICIAL_CHECKPOINT_GLOBALS`.
        where (str): What the user sets to opt in, for the error message.

    Returns:
        Any: The loaded checkpoint.

    Raises:
        FileNotFoundError: If a local file does not exist.
        UnsafeCheckpointError: If the file holds types outside the allow-lists.
    """
    if is_trusted(filename):
        return CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    try:
        with torch.serialization.safe_globals(list(allowed)):
            if is_local(filename):
                path = osp.expanduser(filename)
                if not osp.isfile(path):
                    raise FileNotFoundError(f'Checkpoint {osp.abspath(path)} does not exist.')
                return torch.load(path, map_location=map_location, weights_only=True)
            return CheckpointLoader.load_checkpoint(filename, map_location=map_location)
    except pickle.UnpicklingError as error:
        types = unsafe_globals(filename, allowed) if is_local(filename) else []
        raise UnsafeCheckpointError(unsafe_checkpoint_message(filename, types, where)) \
            from error


def check_loadable(filename: Optional[str], where: str) -> None:
    """Fail early, with the opt-in named, if a local checkpoint cannot load weights-only.

    Args:
        filename (str, optional): Checkpoint path; remote, ``trusted://`` and missing
            paths are left to the loader.
        where (str): What the user sets to opt in, for the error message.

    Raises:
        UnsafeCheckpointError: If the file holds types outside torch's allow-list.
    """
    if not filename or is_trusted(filename) or not is_local(filename) \
            or not osp.isfile(filename):
        return
    types = unsafe_globals(filename)
    if types:
        raise UnsafeCheckpointError(unsafe_checkpoint_message(filename, types, where))
