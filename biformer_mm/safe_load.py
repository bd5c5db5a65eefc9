"""Reading checkpoint files without running code from them.

A checkpoint is a pickle, and unpickling an arbitrary pickle can run arbitrary code. A
weights-only load only rebuilds tensors, containers and the types on an allow-list, and
every checkpoint biformer_mm reads goes through one:

- backbone weights (:func:`read_checkpoint`, used by ``init_cfg=dict(type='Pretrained')``)
  and the timm classifiers' pretrained weights (``pretrained_cfg_overlay=dict(file=...)``)
  allow only what the official BiFormer files hold besides tensors
  (:data:`OFFICIAL_CHECKPOINT_GLOBALS`);
- ``tools/train.py`` and ``tools/test.py`` hand mmengine's Runner every checkpoint
  (``--resume``, ``load_from``, ``CHECKPOINT``) as ``weights-only://PATH``
  (:func:`weights_only_path`), which mmengine's
  :class:`~mmengine.runner.CheckpointLoader` reads through :func:`read_checkpoint` too;
  :mod:`biformer_mm.engine` adds what mmengine, mmdet and mmseg put in those
  checkpoints to the allow-list (:func:`add_safe_globals`).

The weights-only load is torch's (``torch.load(weights_only=True)`` with
``torch.serialization.safe_globals``) from torch 2.5 on, and
:mod:`biformer_mm.restricted_unpickler` on older torch (e.g. 2.1), whose weights-only
loader takes no allow-list. Local files are read directly, http(s) URLs once into torch's
hub cache (``TORCH_HOME``), other mmengine backends into memory.

A file that holds anything else is refused with :class:`UnsafeCheckpointError`, which
names the types. For a file you trust, the explicit opt-in is the ``trusted://`` prefix
(``trusted:///abs/path.pth`` or ``trusted://relative/path.pth``), accepted wherever a
checkpoint path is (``init_cfg.checkpoint``, ``load_from``, ``--resume``,
``tools/test.py``, the timm classifiers' ``file``): such a file is loaded in full (``weights_only=False``). See
``docs/checkpoints.md``.
"""
import _codecs
import argparse
import collections
import io
import os
import os.path as osp
import pickle
import zipfile
from typing import IO, Any, Dict, List, Optional, Sequence, Union
from urllib.parse import urlparse

import torch
from mmengine import fileio
from mmengine.dist import get_dist_info
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader

from .restricted_unpickler import (GlobalEntry, global_names, pickle_globals,
                                   restricted_pickle_module)

TRUSTED_PREFIX = 'trusted://'
"""Prefix of a checkpoint path that the user trusts to be loaded in full."""

WEIGHTS_ONLY_PREFIX = 'weights-only://'
"""Prefix under which mmengine's CheckpointLoader reads a path weights-only."""

OFFICIAL_CHECKPOINT_GLOBALS = (argparse.Namespace, )
"""Non-tensor types of the official BiFormer checkpoints: the training arguments."""

TORCH_HAS_ALLOWLIST = all(
    hasattr(torch.serialization, name)
    for name in ('add_safe_globals', 'safe_globals', 'get_unsafe_globals_in_checkpoint'))
"""Whether torch's weights-only loader takes an allow-list (torch >= 2.5); without
one, :mod:`biformer_mm.restricted_unpickler` loads weights-only."""

_ADDED_GLOBALS: List[GlobalEntry] = []
""":func:`add_safe_globals` entries, where torch has no allow-list of its own."""

MapLocation = Union[str, torch.device, None]
CheckpointFile = Union[str, IO[bytes]]


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


def add_safe_globals(entries: Sequence[GlobalEntry]) -> None:
    """Allow ``entries`` in every weights-only load of the process: torch's
    ``torch.serialization.add_safe_globals``, or the allow-list of
    :mod:`biformer_mm.restricted_unpickler` where torch has none.

    Args:
        entries (Sequence): Objects, or ``(object, 'module.name')`` pairs.
    """
    if TORCH_HAS_ALLOWLIST:
        torch.serialization.add_safe_globals(list(entries))
    else:
        _ADDED_GLOBALS.extend(entries)


def _newer_torch_defaults() -> Dict[str, Any]:
    """Data types that torch's weights-only loader allows by default from torch 2.5 on
    and older torch's does not: bytes (``_codecs.encode`` in protocol-2 pickles, e.g.
    numpy arrays), bytearray, complex, set, ``collections.Counter``, ``torch.device``
    and every torch dtype."""
    entries = {'_codecs.encode': _codecs.encode, 'builtins.bytearray': bytearray,
               'builtins.complex': complex, 'builtins.set': set,
               'collections.Counter': collections.Counter, 'torch.device': torch.device}
    entries.update({str(t): t for t in vars(torch).values() if isinstance(t, torch.dtype)})
    return entries


def _restricted_allowlist(allowed: Sequence[GlobalEntry]) -> Dict[str, Any]:
    """What :mod:`biformer_mm.restricted_unpickler` allows where torch has no allow-list:
    torch's own weights-only globals, :func:`_newer_torch_defaults`,
    :func:`add_safe_globals`' entries and ``allowed``."""
    from torch._weights_only_unpickler import _get_allowed_globals
    return {**_get_allowed_globals(), **_newer_torch_defaults(),
            **global_names(_ADDED_GLOBALS), **global_names(allowed)}


def load_weights_only(file: CheckpointFile, map_location: MapLocation = 'cpu',
                      allowed: Sequence[GlobalEntry] = ()) -> Any:
    """``torch.load`` weights-only, also allowing ``allowed`` for this call.

    Raises:
        pickle.UnpicklingError: If the file holds a type outside the allow-list.
    """
    if TORCH_HAS_ALLOWLIST:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(file, map_location=map_location, weights_only=True)
    # torch < 2.5 has no allow-list: not a full load, the restricted unpickler refuses
    # every global outside it.
    return torch.load(file, map_location=map_location, weights_only=False,
                      pickle_module=restricted_pickle_module(_restricted_allowlist(allowed)))


@CheckpointLoader.register_scheme(prefixes=TRUSTED_PREFIX)
def load_from_trusted(filename: str, map_location: MapLocation = None) -> Any:
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


@CheckpointLoader.register_scheme(prefixes=WEIGHTS_ONLY_PREFIX)
def load_from_weights_only(filename: str, map_location: MapLocation = None) -> Any:
    """Read ``weights-only://PATH`` with :func:`read_checkpoint`, allowing what
    :func:`add_safe_globals` added (the training checkpoint types, once
    :mod:`biformer_mm.engine` is imported).

    Registered with mmengine's :class:`~mmengine.runner.CheckpointLoader` under its own
    prefix: ``tools/train.py`` and ``tools/test.py`` give the Runner their checkpoints
    this way (:func:`weights_only_path`), and configs may use it for mmdet's and
    mmseg's own tools on torch < 2.6, whose default loads are not weights-only.

    Args:
        filename (str): ``weights-only://`` followed by a local path, a URL or a path of
            an mmengine file backend.
        map_location (str | torch.device, optional): As for :func:`torch.load`.

    Returns:
        Any: The loaded checkpoint.
    """
    return read_checkpoint(filename, map_location, allowed=())


def unsafe_globals(file: CheckpointFile, allowed: Sequence[GlobalEntry] = ()) -> list:
    """Types a checkpoint holds that a weights-only load would refuse.

    Args:
        file (str | file): A checkpoint written by ``torch.save`` (zip format).
        allowed (Sequence): Types allowed beyond the allow-list (torch's default and
            :func:`add_safe_globals`').

    Returns:
        list[str]: Fully qualified names, empty when the file loads weights-only.
    """
    if TORCH_HAS_ALLOWLIST:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.serialization.get_unsafe_globals_in_checkpoint(file)
    known = _restricted_allowlist(allowed)
    return [name for name in pickle_globals(file) if name not in known]


def unsafe_checkpoint_message(filename: str, types: Sequence[str],
                              where: str = 'the checkpoint path') -> str:
    """The error text for a checkpoint that needs more than the allow-list."""
    return (f'Checkpoint {filename} holds {", ".join(types) or "objects"} beyond the '
            f'weights-only allow-list, and unpickling those can run code. It was not '
            f'loaded. If you trust this file (you made it, or it comes from a source you '
            f'trust), load it in full by prefixing {where} with {TRUSTED_PREFIX!r}, e.g. '
            f'{TRUSTED_PREFIX}{filename} (see docs/checkpoints.md).')


def _download_once(url: str, path: str) -> None:
    if not osp.isfile(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
        print_log(f'Downloading {url} to {path}', logger='current')
        torch.hub.download_url_to_file(url, path, progress=False)


def cached_download(url: str) -> str:
    """The local copy of an http(s) ``url`` in torch's hub cache
    (``TORCH_HOME/hub/checkpoints/``, where mmengine caches checkpoint URLs), downloaded
    if missing; in a distributed run rank 0 downloads first."""
    path = osp.join(torch.hub.get_dir(), 'checkpoints', osp.basename(urlparse(url).path))
    rank, world_size = get_dist_info()
    if rank == 0:
        _download_once(url, path)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            _download_once(url, path)
    return path


def check_local_file(filename: str) -> None:
    """Raise ``FileNotFoundError`` if ``filename`` (also behind a ``trusted://`` or
    ``weights-only://`` prefix) is a local path that does not exist; URLs and other
    backends are left to their loader."""
    if filename.startswith(WEIGHTS_ONLY_PREFIX):
        filename = filename[len(WEIGHTS_ONLY_PREFIX):]
    path = osp.expanduser(strip_trusted(filename))
    if is_local(path) and not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint {osp.abspath(path)} does not exist.')


def check_checkpoint_argument(checkpoint: str) -> None:
    """Raise ``FileNotFoundError``, saying where relative paths start, if the checkpoint
    file a tool was given (optionally as ``trusted://PATH``) does not exist."""
    if not osp.isfile(strip_trusted(checkpoint)):
        raise FileNotFoundError(f'Checkpoint {checkpoint} does not exist (relative paths '
                                f'start at {osp.abspath(".")}).')


def _open_checkpoint(filename: str) -> CheckpointFile:
    """A local path or an in-memory file to read ``filename`` from."""
    if is_local(filename):
        check_local_file(filename)
        return osp.expanduser(filename)
    if filename.startswith(('http://', 'https://')):
        return cached_download(filename)
    try:
        return io.BytesIO(fileio.get(filename))
    except KeyError as error:
        raise ValueError(
            f'Checkpoint {filename}: biformer_mm reads checkpoints weights-only from local '
            f'paths, http(s) URLs and mmengine file backends (s3://, petrel://, ...), not '
            f'through mmengine\'s {filename.split("://")[0]}:// loader, which unpickles in '
            f'full. Give the http(s) URL it stands for, or a local copy.') from error


def read_checkpoint(filename: str,
                    map_location: MapLocation = 'cpu',
                    allowed: Sequence[GlobalEntry] = OFFICIAL_CHECKPOINT_GLOBALS,
                    where: str = 'the checkpoint path') -> Any:
    """Read a checkpoint weights-only, from a local path, a URL or any mmengine backend.

    Local paths are read directly, http(s) URLs through a copy in torch's hub cache
    (:func:`cached_download`), other backends into memory. ``allowed`` types are
    accepted for the duration of the call only. A ``trusted://`` path is loaded in full;
    a ``weights-only://`` prefix changes nothing.

    Args:
        filename (str): Checkpoint path, URL or backend path.
        map_location (str | torch.device, optional): As for :func:`torch.load`.
            Defaults to ``'cpu'``.
        allowed (Sequence): Non-tensor types to accept. Defaults to
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
    if filename.startswith(WEIGHTS_ONLY_PREFIX):
        filename = filename[len(WEIGHTS_ONLY_PREFIX):]
    file = _open_checkpoint(filename)
    try:
        return load_weights_only(file, map_location, allowed)
    except pickle.UnpicklingError as error:
        if not isinstance(file, str):
            file.seek(0)
        raise UnsafeCheckpointError(
            unsafe_checkpoint_message(filename, unsafe_globals(file, allowed), where)) \
            from error


def check_loadable(filename: Optional[str], where: str) -> None:
    """Fail early, with the opt-in named, if a local checkpoint cannot load weights-only.

    Args:
        filename (str, optional): Checkpoint path; remote, ``trusted://`` and missing
            paths, and files not in ``torch.save``'s zip format, are left to the loader.
        where (str): What the user sets to opt in, for the error message.

    Raises:
        UnsafeCheckpointError: If the file holds types outside the allow-list.
    """
    if not filename or is_trusted(filename) or not is_local(filename) \
            or not zipfile.is_zipfile(filename):
        return
    types = unsafe_globals(filename)
    if types:
        raise UnsafeCheckpointError(unsafe_checkpoint_message(filename, types, where))


def weights_only_path(filename: Optional[str], where: str) -> Optional[str]:
    """The path to give mmengine's Runner for ``filename`` so that it loads weights-only,
    after checking a local file (:func:`check_loadable`).

    Args:
        filename (str, optional): ``load_from``/``--resume``/``CHECKPOINT`` value.
        where (str): What the user sets to opt in, for the error message.

    Returns:
        str | None: ``weights-only://filename``; ``filename`` itself if it is None or
        already carries ``trusted://`` or ``weights-only://``.
    """
    if not filename or filename.startswith((TRUSTED_PREFIX, WEIGHTS_ONLY_PREFIX)):
        return filename
    check_loadable(filename, where)
    return WEIGHTS_ONLY_PREFIX + filename
