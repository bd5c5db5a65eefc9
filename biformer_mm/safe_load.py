"""Checkpoint safety: no checkpoint that biformer_mm reads runs code from the file
(reference: ``docs/checkpoints.md``).

1. Weights-only on every supported torch: :func:`read_checkpoint` rebuilds tensors,
   containers and allow-listed types, nothing else, else raises
   :class:`UnsafeCheckpointError` naming the opt-in. The gate is the unpickler: torch's
   weights-only one with ``safe_globals`` (torch >= 2.5), else :class:`RestrictedUnpickler`.
2. Every entry point: ``Pretrained`` weights and the timm classifiers' ``file`` call
   :func:`read_checkpoint`; our tools hand mmengine ``weights-only://PATH``.
3. One opt-in: ``trusted://PATH`` loads a file the user trusts in full.
4. One existence check (:func:`local_checkpoint`); http(s) URLs are cached under a name
   from the whole URL; other mmengine file backends are read into memory.
5. Our training checkpoints load (:func:`allow_training_checkpoints`).

Import-time changes: this module registers the ``weights-only://`` and ``trusted://``
schemes with mmengine's ``CheckpointLoader``; :mod:`biformer_mm.engine` calls
:func:`allow_training_checkpoints`.
"""
import _codecs
import _compat_pickle
import argparse
import collections
import hashlib
import io
import os
import os.path as osp
import pickle
import types
import zipfile
from typing import IO, Any, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine import fileio
from mmengine.dist import get_dist_info
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner import CheckpointLoader
from mmengine.utils import digit_version

TRUSTED_PREFIX = 'trusted://'
WEIGHTS_ONLY_PREFIX = 'weights-only://'
TORCH_HAS_ALLOWLIST = hasattr(torch.serialization, 'get_unsafe_globals_in_checkpoint')
"""Whether torch's weights-only unpickler takes an allow-list (torch >= 2.5)."""
OFFICIAL_CHECKPOINT_GLOBALS = (argparse.Namespace, )
"""Non-tensor types of the official BiFormer checkpoints: the training arguments."""

# An allow-list entry as torch.serialization.add_safe_globals takes it: an object
# (named module.qualname) or an (object, 'module.name') pair.
GlobalEntry = Union[Any, Tuple[Any, str]]
MapLocation = Union[str, torch.device, None]


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint holds more than a weights-only load accepts."""


def _strip_prefix(filename: str) -> str:
    for prefix in (TRUSTED_PREFIX, WEIGHTS_ONLY_PREFIX):
        if filename.startswith(prefix):
            return filename[len(prefix):]
    return filename


def local_checkpoint(filename: str, hint: str = '') -> Optional[str]:
    """The local file a checkpoint path names (also behind a prefix), or None for a URL
    or another mmengine backend.

    Raises:
        FileNotFoundError: If a local file does not exist, naming it and ``hint``.
    """
    path = osp.expanduser(_strip_prefix(filename))
    if '://' in path:
        return None
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint {osp.abspath(path)} does not exist. {hint}'
                                .rstrip())
    return path


def _download(url: str) -> str:
    """The copy of ``url`` in torch's hub cache, downloaded if missing (rank 0 first),
    under a directory hashed from the whole URL: the official links all end in
    ``/root/content``."""
    path = osp.join(torch.hub.get_dir(), 'checkpoints',
                    hashlib.sha256(url.encode()).hexdigest()[:16],
                    osp.basename(urlparse(url).path) or 'checkpoint')
    rank, world_size = get_dist_info()
    if rank > 0:
        torch.distributed.barrier()
    if not osp.isfile(path):
        os.makedirs(osp.dirname(path), exist_ok=True)
        print_log(f'Downloading {url} to {path}', logger='current')
        torch.hub.download_url_to_file(url, path, progress=False)
    if rank == 0 and world_size > 1:
        torch.distributed.barrier()
    return path


def _open(filename: str, hint: str) -> Union[str, IO[bytes]]:
    """A local path or an in-memory file to read ``filename`` from."""
    path = local_checkpoint(filename, hint)
    if path is not None:
        return path
    url = _strip_prefix(filename)
    if url.startswith(('http://', 'https://')):
        return _download(url)
    try:
        return io.BytesIO(fileio.get(url))
    except KeyError as error:  # no file backend: one of mmengine's model-zoo schemes
        raise ValueError(
            f'Checkpoint {filename}: biformer_mm reads checkpoints from local paths, '
            f'http(s) URLs and mmengine file backends (s3://, petrel://, ...), not '
            f'through mmengine\'s {url.split("://")[0]}:// loader, which unpickles in '
            f'full. Give the http(s) URL it stands for, or a local copy.') from error


_ADDED_GLOBALS: List[GlobalEntry] = []
""":func:`add_safe_globals` entries where torch has no allow-list."""


def add_safe_globals(entries: Sequence[GlobalEntry]) -> None:
    """Allow ``entries`` in every weights-only load of the process."""
    if TORCH_HAS_ALLOWLIST:
        torch.serialization.add_safe_globals(list(entries))
    else:
        _ADDED_GLOBALS.extend(entries)


def _refused(file: Union[str, IO[bytes]], error: Exception,
             allowed: Sequence[GlobalEntry]) -> str:
    """What a weights-only load refused: the globals torch names, or the restricted
    unpickler's reason."""
    if not TORCH_HAS_ALLOWLIST:
        return str(error)
    if not isinstance(file, str):
        file.seek(0)
    try:
        with torch.serialization.safe_globals(list(allowed)):
            names = torch.serialization.get_unsafe_globals_in_checkpoint(file)
    except (pickle.UnpicklingError, ValueError, RuntimeError):  # opcodes torch's scan lacks
        names = []
    return ', '.join(names) or 'pickle operations'


def read_checkpoint(filename: str,
                    map_location: MapLocation = 'cpu',
                    allowed: Sequence[GlobalEntry] = OFFICIAL_CHECKPOINT_GLOBALS,
                    where: str = 'the checkpoint path',
                    hint: str = '',
                    mmap: bool = False) -> Any:
    """Read a checkpoint weights-only from a local path, an http(s) URL or an mmengine
    file backend; in full behind ``trusted://``.

    Args:
        filename (str): Checkpoint path, URL or backend path.
        map_location (str | torch.device, optional): As for :func:`torch.load`.
        allowed (Sequence): Non-tensor types to accept in this call, beyond
            :func:`add_safe_globals`'. Defaults to :data:`OFFICIAL_CHECKPOINT_GLOBALS`.
        where (str): What the user prefixes to opt in, for the error message.
        hint (str): How to get a missing file, for the error message.
        mmap (bool): Memory-map a local ``torch.save`` zip file instead of reading it.

    Raises:
        FileNotFoundError: If a local file does not exist.
        UnsafeCheckpointError: If the file holds more than the allow-lists accept.
    """
    file = _open(filename, hint)
    mmap = mmap and isinstance(file, str) and zipfile.is_zipfile(file)
    if filename.startswith(TRUSTED_PREFIX):
        return torch.load(file, map_location, weights_only=False, mmap=mmap)
    try:
        if TORCH_HAS_ALLOWLIST:
            with torch.serialization.safe_globals(list(allowed)):
                return torch.load(file, map_location, weights_only=True, mmap=mmap)
        # Not a full load: the restricted unpickler refuses every global outside its list.
        return torch.load(file, map_location, weights_only=False, mmap=mmap,
                          pickle_module=restricted_pickle_module([*_ADDED_GLOBALS, *allowed]))
    except pickle.UnpicklingError as error:
        raise UnsafeCheckpointError(
            f'Checkpoint {filename} holds {_refused(file, error, allowed)} beyond the '
            f'weights-only allow-list, and unpickling those can run code. It was not '
            f'loaded. If you trust this file (you made it, or it comes from a source you '
            f'trust), load it in full by prefixing {where} with {TRUSTED_PREFIX!r}, e.g. '
            f'{TRUSTED_PREFIX}{_strip_prefix(filename)} (see docs/checkpoints.md).') \
            from error


@CheckpointLoader.register_scheme(prefixes=WEIGHTS_ONLY_PREFIX)
def load_from_weights_only(filename: str, map_location: MapLocation = None) -> Any:
    """``weights-only://PATH``, allowing :func:`add_safe_globals`' types only."""
    return read_checkpoint(filename, map_location, allowed=())


@CheckpointLoader.register_scheme(prefixes=TRUSTED_PREFIX)
def load_from_trusted(filename: str, map_location: MapLocation = None) -> Any:
    """``trusted://PATH``: the file in full."""
    return read_checkpoint(filename, map_location)


def weights_only_path(filename: Optional[str],
                      where: str = 'the checkpoint path') -> Optional[str]:
    """``weights-only://filename``, the path to give mmengine (``load_from``, an
    inferencer's ``weights``) to read ``filename`` weights-only; ``filename`` itself if
    None or already prefixed. A local file is read now (memory-mapped), so that a
    missing or refused file fails before anything is built.

    Raises:
        FileNotFoundError: If a local file does not exist.
        UnsafeCheckpointError: If a local file holds more than the allow-lists accept
            (``where`` is what the user prefixes to opt in).
    """
    if not filename:
        return filename
    if local_checkpoint(filename) and not filename.startswith(TRUSTED_PREFIX):
        read_checkpoint(filename, allowed=(), where=where, mmap=True)
    if filename.startswith((TRUSTED_PREFIX, WEIGHTS_ONLY_PREFIX)):
        return filename
    return WEIGHTS_ONLY_PREFIX + filename


# The training checkpoints mmengine writes for our configs hold mmengine's HistoryBuffer,
# which pickles its statistics methods as getattr(HistoryBuffer, 'min') and so on, and
# numpy arrays, dtypes and scalars.
HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
NUMPY_DTYPES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32',
                'uint64', 'float16', 'float32', 'float64')  # no object arrays


def history_buffer_statistic(owner: Any, name: str) -> Any:
    """``getattr`` restricted to ``HistoryBuffer``'s statistics methods: allowed under
    the name ``builtins.getattr``, which itself is not."""
    if owner is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'getattr({owner!r}, {name!r}) (only HistoryBuffer.'
                                 f'{{{",".join(HISTORY_BUFFER_STATISTICS)}}} are allowed)')


def training_checkpoint_globals() -> List[GlobalEntry]:
    """The allow-list entries of the training checkpoints mmengine writes."""
    # numpy 1 pickles numpy.core.multiarray.NAME, numpy 2 numpy._core.multiarray.NAME:
    # files written under either load under both.
    numpy_2 = digit_version(np.__version__) >= digit_version('2.0.0')
    multiarray = np._core.multiarray if numpy_2 else np.core.multiarray
    return [HistoryBuffer, (history_buffer_statistic, 'builtins.getattr'), np.ndarray,
            np.dtype, *(type(np.dtype(name)) for name in NUMPY_DTYPES),
            *((getattr(multiarray, name), f'numpy.{core}.multiarray.{name}')
              for name in ('_reconstruct', 'scalar') for core in ('core', '_core'))]


def allow_training_checkpoints() -> None:
    """Allow :func:`training_checkpoint_globals` in every weights-only load."""
    add_safe_globals(training_checkpoint_globals())


def _checked(opcode: bytes, position: int, state: bool = False) -> Any:
    """Python's unpickler's ``opcode`` after checking the callee (``state``: the type
    whose state is set) at ``position`` of the stack."""
    load = pickle._Unpickler.dispatch[opcode[0]]

    def checked_load(self: 'RestrictedUnpickler') -> None:
        obj = self.stack[position]
        self._check(*((type(obj), 'the state of an instance of') if state else (obj, )))
        load(self)

    return checked_load


class RestrictedUnpickler(pickle._Unpickler):
    """Python's unpickler restricted as torch's weights-only one: a global resolves only
    if :attr:`allowed` names it; only allowed objects are called, not what a call
    returned; state is set only on instances of allowed types. Anything else raises
    :class:`pickle.UnpicklingError`."""

    allowed: dict = {}
    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch.update({pickle.REDUCE[0]: _checked(pickle.REDUCE, -2),
                     pickle.NEWOBJ[0]: _checked(pickle.NEWOBJ, -2),
                     pickle.NEWOBJ_EX[0]: _checked(pickle.NEWOBJ_EX, -3),
                     pickle.BUILD[0]: _checked(pickle.BUILD, -2, state=True)})

    def find_class(self, module: str, name: str) -> Any:
        # Pickles of protocol < 3 (torch.save writes 2) use Python 2 names.
        module, name = _compat_pickle.NAME_MAPPING.get(
            (module, name), (_compat_pickle.IMPORT_MAPPING.get(module, module), name))
        if f'{module}.{name}' not in self.allowed:
            raise pickle.UnpicklingError(f'{module}.{name}')
        return self.allowed[f'{module}.{name}']

    def _check(self, obj: Any, what: str = 'a call of') -> None:
        if not any(obj is allowed for allowed in self.allowed.values()):
            raise pickle.UnpicklingError(f'{what} {obj!r}')

    def _instantiate(self, klass: Any, args: list) -> None:  # INST and OBJ
        self._check(klass)
        super()._instantiate(klass, args)


def restricted_pickle_module(allowed: Sequence[GlobalEntry]) -> types.ModuleType:
    """A ``torch.load(pickle_module=...)`` whose unpickler is :class:`RestrictedUnpickler`
    allowing torch's own weights-only globals, what torch >= 2.5 allows by default
    besides, and ``allowed``."""
    from torch._weights_only_unpickler import _get_allowed_globals
    newer_defaults = [(_codecs.encode, '_codecs.encode'), bytearray, complex, set,
                      collections.Counter, (torch.device, 'torch.device'),
                      *((t, str(t)) for t in vars(torch).values()
                        if isinstance(t, torch.dtype))]
    names = {**_get_allowed_globals()}
    for entry in [*newer_defaults, *allowed]:  # named as torch names them
        obj, name = entry if isinstance(entry, tuple) else (
            entry, f'{entry.__module__}.{entry.__qualname__}')
        names[name] = obj
    module = types.ModuleType('biformer_mm_restricted_pickle')
    module.Unpickler = type('Unpickler', (RestrictedUnpickler, ), {'allowed': names})
    module.load = lambda file, **kwargs: module.Unpickler(file, **kwargs).load()
    return module
