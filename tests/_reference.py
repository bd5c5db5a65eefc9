"""Access to the reference data produced by the official BiFormer code (../shared)."""
import argparse
import json
from pathlib import Path

import pytest
import torch

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / 'shared' / 'reference'
FIXTURE_PATH = REFERENCE_DIR / 'official_dense_tiny_fixture.pt'
CLS_FIXTURE_PATH = REFERENCE_DIR / 'official_cls_tiny_fixture.pt'
MANIFEST_PATH = REFERENCE_DIR / 'official_state_dict_manifest.json'


def _require(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f'reference file {path} is missing: the project expects ../shared/reference '
                    f'next to the checkout.')
    return path


def load_fixture() -> dict:
    """The official dense-layout tiny model: ``arch``, ``state_dict``, ``input``, ``outputs``."""
    return torch.load(_require(FIXTURE_PATH), map_location='cpu', weights_only=False)


def load_cls_fixture() -> dict:
    """The official tiny classifier: ``arch``, ``state_dict``, ``input``, ``logits``."""
    return torch.load(_require(CLS_FIXTURE_PATH), map_location='cpu', weights_only=False)


def fixture_arch(fixture: dict) -> dict:
    """Our ``BiFormer`` (and ``BiFormerClassifier``) kwargs for the fixture's official
    constructor arguments."""
    a = fixture['arch']
    arch = dict(depths=a['depth'], embed_dims=a['embed_dim'], qk_dims=a['qk_dims'],
                mlp_ratios=a['mlp_ratios'], topks=a['topks'], head_dim=a['head_dim'],
                side_dwconv=a['side_dwconv'])
    return dict(arch=arch, n_win=a['n_win'], auto_pad=a['auto_pad'])


def load_manifest() -> dict:
    """Official T/S/B state-dict keys, shapes and parameter counts."""
    return json.loads(_require(MANIFEST_PATH).read_text())


def save_official(path, state_dict, wrap='model') -> str:
    """Save like the official training script: weights plus its argparse arguments."""
    torch.save({wrap: state_dict, 'args': argparse.Namespace(lr=1e-3, model='biformer')},
               path)
    return str(path)
