"""Distributed training and testing on CPU-only machines (gloo).

mmengine 0.10.7's launchers call ``torch.cuda.set_device`` and its Runner's DDP wrapper
gets ``device_ids=[LOCAL_RANK]``; both fail without CUDA. The Runner keeps an existing
process group and a wrapper config's ``device_ids=None``, so on CPU we set up both.
"""
import datetime
import os
import subprocess
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import MODEL_WRAPPERS
from torch.nn.parallel import DistributedDataParallel

LAUNCHERS = ('none', 'pytorch', 'slurm')


def export_slurm_env(port: Optional[int] = None) -> None:
    """Set the ``env://`` rendezvous variables of torch.distributed from a slurm task,
    as mmengine's slurm launcher does (``port``, else ``MASTER_PORT``, else 29500).

    Raises:
        RuntimeError: If the slurm variables are missing (not started by ``srun``).
    """
    missing = [k for k in ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST')
               if k not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher slurm needs the slurm task variables {missing}: '
                           f'start the job with srun (see tools/slurm_train.sh).')
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    if port is not None:
        os.environ['MASTER_PORT'] = str(port)
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f'scontrol show hostname {os.environ["SLURM_NODELIST"]} | head -n1')


def init_cpu_process_group(launcher: str, dist_cfg: Optional[dict] = None) -> None:
    """Initialise a gloo process group for ``launcher`` (``'pytorch'`` or ``'slurm'``)
    unless one exists, with ``dist_cfg``'s ``timeout`` (seconds) and slurm ``port``."""
    if dist.is_initialized():
        return
    dist_cfg = dict(dist_cfg or {})
    if launcher == 'slurm':
        export_slurm_env(dist_cfg.get('port'))
    elif launcher != 'pytorch':
        raise ValueError(f'Unknown launcher {launcher!r}; use one of {LAUNCHERS}.')
    kwargs = {}
    if dist_cfg.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    dist.init_process_group(backend='gloo', **kwargs)
    print_log(f'CUDA is not available: initialised a gloo process group (rank '
              f'{dist.get_rank()} of {dist.get_world_size()}) for CPU distributed running.',
              logger='current')


def setup_cpu_distributed(cfg: Config) -> bool:
    """For ``cfg.launcher`` without CUDA: a gloo process group, and the DDP wrapper
    config (the config's, completed) with ``device_ids=None``. Changes ``cfg`` in place.

    Returns:
        bool: Whether CPU distributed running was set up.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return False
    init_cpu_process_group(launcher, cfg.get('env_cfg', {}).get('dist_cfg'))
    wrapper_cfg = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel',
        broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_cfg.setdefault('type', 'MMDistributedDataParallel')
    wrapper_type = MODEL_WRAPPERS.get(wrapper_cfg['type'])
    if isinstance(wrapper_type, type) and issubclass(wrapper_type, DistributedDataParallel):
        wrapper_cfg['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper_cfg
    return True
