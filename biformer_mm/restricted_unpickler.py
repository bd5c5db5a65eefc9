"""Weights-only unpickling for torch versions whose weights-only loader takes no
allow-list (torch < 2.5, e.g. the classic torch 2.1 stack).

From torch 2.5 on, :mod:`biformer_mm.safe_load` uses torch's own weights-only unpickler
with ``torch.serialization.safe_globals``. Older torch has that unpickler but with a
fixed list of globals, which refuses the ``argparse.Namespace`` of the official BiFormer
files and the mmengine/numpy types of training checkpoints. There, checkpoints are read
by ``torch.load(pickle_module=restricted_pickle_module(allowed))``: Python's unpickler
whose :meth:`~RestrictedUnpickler.find_class` resolves only the names of an allow-list
(the "restricting globals" pattern of the :mod:`pickle` documentation), and which, as
torch's weights-only unpickler, calls only allowed objects and sets the state only of
instances of allowed types; it raises :class:`pickle.UnpicklingError` for anything
else. The only callables a file can reach are torch's tensor-rebuilding functions, its
data types and the allowed types.

:func:`pickle_globals` lists the globals a checkpoint names, without unpickling it, for
error messages and early checks.
"""
import _compat_pickle
import io
import pickle
import pickletools
import types
import zipfile
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

GlobalEntry = Union[Any, Tuple[Any, str]]
"""An allow-list entry as ``torch.serialization.add_safe_globals`` takes it: an object
(allowed under its ``module.qualname``) or an ``(object, 'module.name')`` pair."""

_STRING_OPS = {'SHORT_BINUNICODE', 'BINUNICODE', 'BINUNICODE8', 'UNICODE', 'STRING',
               'BINSTRING', 'SHORT_BINSTRING'}


def python3_name(module: str, name: str) -> str:
    """``module.name`` as Python 3 names it: pickles of protocol < 3 (``torch.save``
    writes protocol 2) name ``builtins`` ``__builtin__`` and so on, which ``pickle``
    translates with the table of :mod:`_compat_pickle`."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    else:
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f'{module}.{name}'


def global_names(entries: Iterable[GlobalEntry]) -> Dict[str, Any]:
    """``{'module.name': object}`` for allow-list entries, named as torch names them."""
    names = {}
    for entry in entries:
        obj, name = entry if isinstance(entry, tuple) else \
            (entry, f'{entry.__module__}.{entry.__qualname__}')
        names[name] = obj
    return names


class RestrictedUnpickler(pickle._Unpickler):
    """Python's (pure-Python) unpickler, restricted as torch's weights-only one is:

    - a global resolves only if its name is in :attr:`allowed`;
    - only the allowed objects may be called (``REDUCE``, ``NEWOBJ``, ``OBJ``,
      ``INST``), not whatever a call returned;
    - state is set (``BUILD``) only on instances of the allowed types, never on a
      class, a function or a module.

    Anything else raises :class:`pickle.UnpicklingError`. Subclasses set :attr:`allowed`
    (see :func:`restricted_pickle_module`).
    """

    allowed: Dict[str, Any] = {}
    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        qualified = python3_name(module, name)
        if qualified in self.allowed:
            return self.allowed[qualified]
        raise pickle.UnpicklingError(
            f'Weights only load failed: unsupported global {qualified} (not on the '
            f'weights-only allow-list).')

    def _check_callable(self, func: Any) -> None:
        if not any(func is obj for obj in self.allowed.values()):
            raise pickle.UnpicklingError(
                f'Weights only load failed: the pickle calls {func!r}, which is not on the '
                f'weights-only allow-list.')

    def _instantiate(self, klass: Any, args: list) -> None:
        self._check_callable(klass)
        super()._instantiate(klass, args)

    def load_reduce(self) -> None:
        self._check_callable(self.stack[-2])
        super().load_reduce()

    def load_newobj(self) -> None:
        self._check_callable(self.stack[-2])
        super().load_newobj()

    def load_newobj_ex(self) -> None:
        self._check_callable(self.stack[-3])
        super().load_newobj_ex()

    def load_build(self) -> None:
        kind = type(self.stack[-2])
        if not any(kind is obj for obj in self.allowed.values()):
            raise pickle.UnpicklingError(
                f'Weights only load failed: the pickle sets the state of a {kind!r}, '
                f'which is not on the weights-only allow-list.')
        super().load_build()

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build


def restricted_pickle_module(allowed: Dict[str, Any]) -> types.ModuleType:
    """A module to pass as ``torch.load(pickle_module=...)`` whose ``Unpickler`` and
    ``load`` are :class:`RestrictedUnpickler` with ``allowed`` (``{'module.name':
    object}``)."""
    module = types.ModuleType('biformer_mm_restricted_pickle')
    module.Unpickler = type('Unpickler', (RestrictedUnpickler, ), {'allowed': dict(allowed)})
    module.load = lambda file, **kwargs: module.Unpickler(file, **kwargs).load()
    return module


def pickle_globals(filename: str) -> List[str]:
    """The globals (``module.name``) the pickle of a ``torch.save`` checkpoint names, in
    order of first use, found by reading its opcodes (nothing is unpickled).

    ``GLOBAL``/``INST`` carry their names; for ``STACK_GLOBAL`` (pickle protocol 4) the
    names are the two strings pushed last, followed through the memo. That is exact for
    the pickles ``pickle`` writes, and only serves messages and early checks: whether a
    file loads is decided by the unpickler.

    Args:
        filename (str): A checkpoint written by ``torch.save`` (zip format).

    Returns:
        list[str]: Fully qualified names, each once.

    Raises:
        ValueError: If the file is not a ``torch.save`` zip checkpoint.
    """
    if not zipfile.is_zipfile(filename):
        raise ValueError(f'{filename} is not a checkpoint written by torch.save (zip format).')
    with zipfile.ZipFile(filename) as archive:
        root = archive.namelist()[0].split('/')[0]
        data = archive.read(f'{root}/data.pkl')
    found: Dict[str, None] = {}
    strings: List[str] = []
    memo: Dict[int, Optional[str]] = {}
    top: Optional[str] = None  # the string on top of the stack, if it is one
    for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
        name = opcode.name
        if name in ('GLOBAL', 'INST'):
            found[python3_name(*arg.split(' ', 1))] = None
            top = None
        elif name == 'STACK_GLOBAL':
            found[python3_name(*(['?', '?'] + strings)[-2:])] = None
            top = None
        elif name in _STRING_OPS:
            top = arg if isinstance(arg, str) else arg.decode('latin-1')
            strings.append(top)
        elif name in ('GET', 'BINGET', 'LONG_BINGET'):
            top = memo.get(int(arg))
            if top is not None:
                strings.append(top)
        elif name == 'MEMOIZE':
            memo[len(memo)] = top
        elif name in ('PUT', 'BINPUT', 'LONG_BINPUT'):
            memo[int(arg)] = top
        else:
            top = None
    return list(found)
