"""Config overlays: config files applied on top of any config at load time.

An overlay is an ordinary mmengine config file (it may have its own ``_base_``) that
is merged onto a config exactly the way a child config is merged onto its ``_base_``:
dicts merge key by key, other values (lists included) are replaced, and
``_delete_=True`` replaces a whole dict. ``tools/train.py CONFIG --overlay OVERLAY`` thus
behaves like a config whose ``_base_`` is ``CONFIG`` and whose body is ``OVERLAY``,
without writing one such file per config. ``configs/detection/toy/`` holds overlays that
point detection configs at the built-in toy dataset.
"""
import os.path as osp
from typing import Optional, Sequence

from mmengine.config import Config


def apply_overlay(cfg: Config, overlay: str) -> Config:
    """Merge the config file ``overlay`` onto ``cfg`` in place.

    Args:
        cfg (Config): Config to change.
        overlay (str): Path of the overlay config file.

    Returns:
        Config: ``cfg``.

    Raises:
        FileNotFoundError: If ``overlay`` does not exist.
    """
    if not osp.isfile(overlay):
        raise FileNotFoundError(f'Overlay config {overlay} does not exist (relative paths '
                                f'start at {osp.abspath(".")}).')
    cfg.merge_from_dict(Config.fromfile(overlay).to_dict())
    return cfg


def load_config(config: str,
                overlays: Sequence[str] = (),
                cfg_options: Optional[dict] = None) -> Config:
    """Load ``config``, then apply ``overlays`` in order, then ``cfg_options``.

    Args:
        config (str): Config file path.
        overlays (Sequence[str]): Overlay config files. Defaults to ().
        cfg_options (dict, optional): ``--cfg-options`` style overrides
            (``{'a.b': value}``). Defaults to None.

    Returns:
        Config: The merged config.
    """
    if not osp.isfile(config):
        raise FileNotFoundError(f'Config {config} does not exist (relative paths start at '
                                f'{osp.abspath(".")}).')
    cfg = Config.fromfile(config)
    for overlay in overlays:
        apply_overlay(cfg, overlay)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg
