"""Turning on the prediction drawing of a config's visualization hook at test time."""
import inspect
import os.path as osp
from typing import Optional

from mmengine.config import Config
from mmengine.registry import HOOKS


def enable_visualization(cfg: Config,
                         show_dir: Optional[str] = None,
                         show: bool = False,
                         wait_time: float = 2.) -> Config:
    """Make ``default_hooks.visualization`` draw predictions while testing, as mmdet's
    and mmseg's ``tools/test.py`` do (``test_out_dir`` or the visualizer's ``save_dir``).

    Args:
        cfg (Config): Config changed in place.
        show_dir (str, optional): Directory for the drawn images; made absolute so
            mmdet does not nest it under ``work_dir/timestamp``. Defaults to None.
        show (bool): Also show the images in a window. Defaults to False.
        wait_time (float): Seconds each shown image stays. Defaults to 2.

    Returns:
        Config: ``cfg``.

    Raises:
        RuntimeError: If the config has no ``default_hooks.visualization``.
    """
    hook_cfg = cfg.get('default_hooks', {}).get('visualization')
    if hook_cfg is None:
        raise RuntimeError('Drawing predictions needs a visualization hook: add e.g. '
                           "default_hooks = dict(visualization=dict(type='DetVisualizationHook'"
                           ')) to the config.')
    hook_cfg['draw'] = True
    # mmseg's hook draws every interval-th test batch only (default 50): draw them all.
    hook_cfg['interval'] = 1
    if show:
        hook_cfg['show'] = True
        hook_cfg['wait_time'] = wait_time
    if show_dir is not None:
        show_dir = osp.abspath(show_dir)
        hook_type = hook_cfg['type']
        if isinstance(hook_type, str):
            scope = hook_cfg.get('_scope_', cfg.get('default_scope', 'mmengine'))
            hook_type = HOOKS.get(hook_type if '.' in hook_type else f'{scope}.{hook_type}')
        if hook_type is None:
            raise RuntimeError(f'Unknown visualization hook {hook_cfg["type"]!r}: check '
                               f'default_hooks.visualization.type and default_scope.')
        if 'test_out_dir' in inspect.signature(hook_type).parameters:
            hook_cfg['test_out_dir'] = show_dir
        else:
            cfg.visualizer['save_dir'] = show_dir
    return cfg
