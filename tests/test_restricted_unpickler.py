"""Specification of the weights-only loading used where torch's weights-only loader takes
no allow-list (torch < 2.5): it loads the official files and refuses anything beyond the
allow-list without running it. Run on every stack, with the torch-version switch forced
to the restricted unpickler."""
import argparse
import fractions
import io
import pickle

import pytest
import torch

from biformer_mm import BiFormer, safe_load
from biformer_mm.safe_load import restricted_pickle_module, training_checkpoint_globals
from conftest import Payload, save_scan_bypass

pytestmark = pytest.mark.classic


@pytest.fixture
def restricted(monkeypatch):
    """``biformer_mm.safe_load`` as on torch < 2.5."""
    monkeypatch.setattr(safe_load, 'TORCH_HAS_ALLOWLIST', False)


def test_official_file_loads_and_a_payload_is_refused_unrun(restricted, tmp_path):
    official = tmp_path / 'biformer_tiny_best.pth'
    torch.save({'model': BiFormer(arch='tiny').state_dict(),
                'args': argparse.Namespace(model='biformer_tiny')}, official)
    loaded = safe_load.read_checkpoint(str(official))
    assert loaded['args'].model == 'biformer_tiny'
    marker = tmp_path / 'payload_ran'
    evil = tmp_path / 'evil.pth'
    torch.save({'model': {}, 'args': Payload(marker)}, evil)
    with pytest.raises(safe_load.UnsafeCheckpointError, match='builtins.exec'):
        safe_load.read_checkpoint(str(evil))
    with pytest.raises(safe_load.UnsafeCheckpointError, match='builtins.exec'):
        safe_load.read_checkpoint(save_scan_bypass(tmp_path / 'bypass.pth', marker))
    assert not marker.exists()


def test_allow_list_is_per_call_plus_what_was_added(restricted, tmp_path, monkeypatch):
    path = tmp_path / 'custom.pth'
    torch.save({'ratio': fractions.Fraction(1, 3), 'data': b'\x00\xff'}, path)
    with pytest.raises(safe_load.UnsafeCheckpointError, match='fractions.Fraction'):
        safe_load.read_checkpoint(str(path))
    assert safe_load.read_checkpoint(str(path), allowed=[fractions.Fraction])['data'] == \
        b'\x00\xff'
    monkeypatch.setattr(safe_load, '_ADDED_GLOBALS', [])
    safe_load.add_safe_globals([fractions.Fraction])
    assert safe_load.read_checkpoint(str(path), allowed=())['ratio'] == \
        fractions.Fraction(1, 3)


def test_only_allowed_objects_are_called_and_only_their_instances_get_state():
    """Beyond the names of its globals: a pickle can neither call what an allowed call
    returned nor set attributes of an allowed class itself."""
    unpickler = restricted_pickle_module([argparse.Namespace, *training_checkpoint_globals()])
    # getattr(HistoryBuffer, 'min') is allowed (mmengine pickles it); calling the result
    # is not.
    call_result = (b'\x80\x02c__builtin__\ngetattr\ncmmengine.logging.history_buffer\n'
                   b'HistoryBuffer\nX\x03\x00\x00\x00min\x86R)R.')
    with pytest.raises(pickle.UnpicklingError, match='a call of <function HistoryBuffer.min'):
        unpickler.load(io.BytesIO(call_result))
    # BUILD with slot state on the class argparse.Namespace would set Namespace.__repr__.
    set_class_attribute = (b'\x80\x02cargparse\nNamespace\nN}X\x08\x00\x00\x00__repr__'
                           b'K\x01s\x86b.')
    with pytest.raises(pickle.UnpicklingError,
                       match="the state of an instance of <class 'type'>"):
        unpickler.load(io.BytesIO(set_class_attribute))
    assert '__repr__' not in vars(argparse.Namespace)
    assert unpickler.load(io.BytesIO(pickle.dumps(argparse.Namespace(lr=0.1), protocol=2))) \
        == argparse.Namespace(lr=0.1)
