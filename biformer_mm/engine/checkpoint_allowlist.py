"""Weights-only loading of the training checkpoints mmengine's Runner writes.

Besides tensors, the checkpoints mmengine writes for our detection and segmentation
configs (with and without AMP) hold, in the message hub and the runtime information:

- mmengine's ``HistoryBuffer`` objects, which pickle their four default statistics
  methods as ``getattr(HistoryBuffer, 'min')`` and so on;
- numpy arrays, dtypes (of booleans and numbers) and scalars.

:func:`allow_training_checkpoints` adds exactly these to the weights-only allow-list
(:func:`biformer_mm.safe_load.add_safe_globals`: torch's own from torch 2.5 on).
``builtins.getattr`` is not allowed as such: its name resolves to
:func:`history_buffer_statistic`, which returns those four methods and refuses
everything else. A checkpoint holding any other type is still refused, with the type
named; ``tools/train.py``/``tools/test.py`` check the file before the run and name the
``trusted://`` opt-in (see :mod:`biformer_mm.safe_load`).

Importing :mod:`biformer_mm.engine` (as our configs do through ``custom_imports``) calls
:func:`allow_training_checkpoints`. It changes no loader: it only widens the allow-list
by these data types, for every weights-only load of the process: those of
``tools/train.py``/``tools/test.py`` (``weights-only://``) and, from torch 2.6 on, whose
``torch.load`` is weights-only by default, those of mmengine's own loaders (``mim test``,
mmdet's and mmseg's tools). On older torch, mmengine's own loaders unpickle in full.
"""
import pickle
from typing import Any, List, Tuple, Union

import numpy as np
from mmengine.logging import HistoryBuffer

from ..safe_load import add_safe_globals

HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')
"""The statistics methods every ``HistoryBuffer`` pickles by reference."""

NUMPY_DTYPES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32',
                'uint64', 'float16', 'float32', 'float64')
"""Element types of the numpy arrays and scalars allowed (no object arrays)."""


def history_buffer_statistic(owner: Any, name: str) -> Any:
    """``getattr`` restricted to ``HistoryBuffer``'s default statistics methods.

    Stands in for ``builtins.getattr`` while unpickling weights-only.

    Raises:
        pickle.UnpicklingError: For any other object or attribute.
    """
    if owner is HistoryBuffer and name in HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'Refusing getattr({owner!r}, {name!r}) while loading weights-only: only '
        f'HistoryBuffer.{{{",".join(HISTORY_BUFFER_STATISTICS)}}} are allowed. If you '
        f'trust the file, load it with the trusted:// prefix (docs/checkpoints.md).')


def _numpy_multiarray(name: str) -> List[Tuple[Any, str]]:
    """``numpy.core.multiarray.NAME`` (numpy 1) and ``numpy._core.multiarray.NAME``
    (numpy 2): checkpoints written under either numpy load under both."""
    obj = getattr(np.core.multiarray if np.__version__ < '2' else np._core.multiarray, name)
    return [(obj, f'numpy.core.multiarray.{name}'), (obj, f'numpy._core.multiarray.{name}')]


def training_checkpoint_globals() -> List[Union[Any, Tuple[Any, str]]]:
    """The allow-list entries, in the form ``torch.serialization.add_safe_globals``
    takes."""
    return [
        HistoryBuffer,
        (history_buffer_statistic, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
        *(type(np.dtype(name)) for name in NUMPY_DTYPES),
        *_numpy_multiarray('_reconstruct'),
        *_numpy_multiarray('scalar'),
    ]


def allow_training_checkpoints() -> None:
    """Add :func:`training_checkpoint_globals` to the weights-only allow-list."""
    add_safe_globals(training_checkpoint_globals())
