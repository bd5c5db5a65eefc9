"""Specification of tools/analysis/plot_complexity.py: each curve is the counted attention
FLOPs of its method, which here equal the closed forms of the paper's analysis."""
import math

from conftest import load_tool

plot_complexity = load_tool('analysis/plot_complexity.py')


def test_curves_are_the_closed_forms_and_the_png_is_written(tmp_path):
    sizes = [224, 336]
    result = plot_complexity.measure(stage=3, fixed_n_win=7, sizes=sizes)
    c, k = result['channels'], result['topk']
    assert (c, k, result['stride']) == (256, 16, 16)
    for i, size in enumerate(sizes):
        side = size // 16  # 14, 21: multiples of 7, so 7x7 windows need no padding
        tokens = side * side

        def bra(s: int) -> int:
            """Routing over s^2 regions, then each of the s^2 * w tokens of the padded
            map attends to the w tokens of each of its k routed regions."""
            w = math.ceil(side / s)**2
            return s**4 * c + 2 * k * s**2 * w * w * c

        curves = {name: values[i] for name, values in result['curves'].items()}
        assert curves == {
            'BRA, S = 7 fixed': bra(7),
            'BRA, S as the paper suggests': bra(result['paper_s'][i]),
            'global attention': 2 * tokens**2 * c,
            'Swin 7x7 window attention': 2 * tokens * 49 * c,
        }
    # 14x14: 7 regions of 2x2; 21x21: 11 regions of 2x2 after padding to 22x22.
    assert result['paper_s'] == [7, 11]
    out = tmp_path / 'complexity.png'
    plot_complexity.plot(result, 3, str(out))
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
