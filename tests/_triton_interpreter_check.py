"""Run by test_routed_attention.py in a subprocess with TRITON_INTERPRET=1: the whole
BiFormer on the Triton path reproduces the official outputs, and the Triton BRA module
agrees with the original algorithm in outputs and gradients at an odd, padded size."""
import os
import sys

import torch

assert os.environ.get('TRITON_INTERPRET') == '1', 'run with TRITON_INTERPRET=1'
sys.path.insert(0, os.path.dirname(__file__))

from _reference import fixture_arch, load_fixture  # noqa: E402
from biformer_mm import BiFormer, convert_official_state_dict  # noqa: E402
from biformer_mm.models.layers import BiLevelRoutingAttention  # noqa: E402

fixture = load_fixture()
model = BiFormer(**fixture_arch(fixture), attn_impl='triton').eval()
model.load_state_dict(convert_official_state_dict(fixture['state_dict']), strict=True)
with torch.no_grad():
    outs = model(fixture['input'])
errors = [float((o - r).abs().max()) for o, r in zip(outs, fixture['outputs'])]
assert max(errors) < 1e-4, f'Triton path differs from the official outputs: {errors}'

torch.manual_seed(0)
results = {}
for impl in ('gather', 'triton'):
    torch.manual_seed(0)
    module = BiLevelRoutingAttention(64, num_heads=2, n_win=3, topk=4, attn_impl=impl)
    x = torch.randn(2, 13, 10, 64, generator=torch.Generator().manual_seed(1),
                    requires_grad=True)
    out = module(x)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    results[impl] = [out, x.grad] + [p.grad for p in module.parameters()]
for ours, original in zip(results['triton'], results['gather']):
    torch.testing.assert_close(ours, original, atol=1e-4, rtol=1e-4)
print('triton interpreter checks passed', errors)
