"""Loading of local mmengine checkpoints under torch>=2.6.

torch 2.6 changed ``torch.load``'s default to ``weights_only=True``. mmengine 0.10.7's
local checkpoint loader calls ``torch.load(filename, map_location=...)`` without the
argument, so every checkpoint mmengine itself saved stops loading: besides tensors they
pickle the message hub (``mmengine.logging.HistoryBuffer`` objects holding numpy arrays),
numpy scalars and dtypes, and ``dataset_meta``. That breaks ``--resume``, ``load_from``
and ``tools/test.py``.

Two fixes were possible:

* allow-listing the needed classes with ``torch.serialization.add_safe_globals``. The
  list is open-ended: it depends on the numpy version (``numpy.core`` vs ``numpy._core``
  reconstructors, one dtype class per dtype), on the hooks and loggers in use and on what
  a dataset puts in its metainfo, so it would break on the next checkpoint that holds
  one more type;
* loading the file in full (``weights_only=False``), which is what mmengine 0.10.7 was
  written against.

We take the second, narrowly: :func:`load_from_local_trusted` replaces only mmengine's
loader for *local paths* (the ``''`` prefix of
:class:`mmengine.runner.CheckpointLoader`); URLs and other backends, and every other
``torch.load`` call, keep torch's defaults. A local path reaches this loader only because
the user named it (``--resume``, ``load_from``, a test checkpoint or a ``Pretrained``
``init_cfg``), so it is trusted the way any Python file the user runs is trusted. Do not
point these options at checkpoints from untrusted sources.

Importing :mod:`biformer_mm.engine` installs the loader; our configs list the module in
``custom_imports`` so that third-party entry points (``mim test mmdet ...``) get it too.
"""
import os.path as osp
from typing import Optional, Union

import torch
from mmengine.runner import CheckpointLoader


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_from_local_trusted(filename: str,
                            map_location: Optional[Union[str, torch.device]] = None):
    """Load a local checkpoint file in full (``weights_only=False``).

    Args:
        filename (str): Local checkpoint path; ``~`` is expanded.
        map_location (str | torch.device, optional): Same as :func:`torch.load`.

    Returns:
        dict | OrderedDict: The loaded checkpoint.

    Raises:
        FileNotFoundError: If ``filename`` is not a file.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'Checkpoint {filename} can not be found: check the path '
                                f'(relative paths start at {osp.abspath(".")}).')
    return torch.load(filename, map_location=map_location, weights_only=False)
