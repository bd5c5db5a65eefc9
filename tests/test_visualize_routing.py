"""Specification of tools/analysis/visualize_routing.py: the regions it draws are the
regions the model routed to, in routing-score order, at the right place in the image."""
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

from biformer_mm import BiFormer
from biformer_mm.safe_load import read_checkpoint
from conftest import DET_TOY, load_tool

visualize_routing = load_tool('analysis/visualize_routing.py')

N_WIN, TOPK = 4, 4
REGION_H, REGION_W = 56, 72  # a 224x288 image: stage-1 regions of 14x18 tokens, stride 4


def brightness_routed_backbone() -> BiFormer:
    """A BiFormer whose first block routes every region to the regions of the image
    with the most red, brightest first.

    The stem passes the red channel through (centre taps of both convolutions, identity
    BatchNorms) into channel 0, with a constant 1 in channel 1; the block's position
    embedding is off. Its BRA then has constant queries ``e_0`` and keys equal to
    channel 0 of the LayerNorm output, which grows with the red value: a region's
    routing score is its mean (normalised) red.
    """
    arch = dict(depths=[1, 1, 1, 1], embed_dims=[64, 128, 256, 512],
                qk_dims=[64, 128, 256, 512], mlp_ratios=[3, 3, 3, 3], topks=[TOPK, 4, 4, -2],
                head_dim=32)
    model = BiFormer(arch=arch, n_win=N_WIN)
    model.init_weights()
    with torch.no_grad():
        for conv in (model.stem[0], model.stem[3]):
            conv.weight.zero_()
            conv.bias.zero_()
            conv.weight[0, 0, 1, 1] = 1
        model.stem[3].bias[1] = 1
        block = model.stages[0][0]
        block.pos_embed.weight.zero_()
        block.pos_embed.bias.zero_()
        qkv = block.attn.qkv
        qkv.weight.zero_()
        qkv.bias.zero_()
        qkv.bias[0] = 1  # q = e_0
        qkv.weight[64, 0] = 1  # k_0 = normed channel 0
    return model.eval()


def test_drawn_regions_are_the_routed_regions_in_score_order(tmp_path):
    rng = np.random.default_rng(0)
    levels = 130 + 7 * rng.permutation(N_WIN * N_WIN)  # red of each region, all distinct
    image = rng.integers(0, 256, (N_WIN * REGION_H, N_WIN * REGION_W, 3), dtype=np.uint8)
    for r, level in enumerate(levels):
        row, col = divmod(r, N_WIN)
        image[row * REGION_H:(row + 1) * REGION_H, col * REGION_W:(col + 1) * REGION_W, 2] = level
    inputs, scale = visualize_routing.arch_inputs(image, size=image.shape[0])
    assert scale == (1., 1.)

    records = visualize_routing.record_routing(brightness_routed_backbone(), inputs, [1], 0)
    brightest = np.argsort(-levels)[:TOPK].tolist()
    assert (records[1].r_idx[0] == torch.tensor(brightest)).all(), 'designed routing'
    point = (3.5 * REGION_W, 1.2 * REGION_H)  # in region (row 1, column 3)
    panel = visualize_routing.make_panel(records[1], 1, 0, point, scale)

    def box(r):
        row, col = divmod(r, N_WIN)
        return (col * REGION_W, row * REGION_H, (col + 1) * REGION_W, (row + 1) * REGION_H)

    assert panel.query_region == box(1 * N_WIN + 3)
    assert panel.routed_regions == brightest
    assert panel.routed_boxes == [box(r) for r in brightest]
    # The query token attends to every token of the routed regions, once.
    assert len(panel.token_boxes) == TOPK * REGION_H * REGION_W // 16
    assert sum(panel.token_attention) == pytest.approx(1, abs=1e-5)
    out = tmp_path / 'routing.png'
    visualize_routing.draw(image[..., ::-1], [[panel]], str(out))
    assert out.read_bytes()[:4] == b'\x89PNG'


def odd_image(path: str, height: int = 181, width: int = 263) -> str:
    image = np.full((height, width, 3), 90, dtype=np.uint8)
    cv2.circle(image, (width // 3, height // 2), 40, (40, 200, 230), -1)
    cv2.rectangle(image, (width // 2, 20), (width - 15, height // 2), (200, 60, 60), -1)
    cv2.imwrite(path, image)
    return path


def check_panels(panels, points, stages):
    assert [[(p.stage, p.point) for p in row] for row in panels] == \
        [[(s, pt) for s in stages] for pt in points]
    for row in panels:
        for panel in row:
            x0, y0, x1, y1 = panel.query_region
            assert x0 <= panel.point[0] < x1 and y0 <= panel.point[1] < y1


def test_arch_mode_draws_every_routed_stage_of_an_odd_sized_image(tmp_path):
    image = odd_image(str(tmp_path / 'odd.png'))
    out = tmp_path / 'routing.png'
    points = [(10., 170.), (262., 0.)]
    panels = visualize_routing.main([image, '--arch', 'tiny', '--points', '10,170', '262,0',
                                     '--out', str(out)])
    check_panels(panels, points, [1, 2, 3])
    assert [len(p.routed_regions) for p in panels[0]] == [1, 4, 16]
    assert out.read_bytes()[:4] == b'\x89PNG'


def test_config_mode_uses_a_trained_detector(trained_det, tmp_path):
    image = odd_image(str(tmp_path / 'odd.png'))
    out = tmp_path / 'routing.png'
    checkpoint = osp.join(trained_det['work_dir'], 'epoch_1.pth')
    panels = visualize_routing.main([image, DET_TOY, '--checkpoint', checkpoint,
                                     '--stage', '2', '--out', str(out)])
    check_panels(panels, [(131.5, 90.5)], [2])
    assert osp.getsize(out) > 0
    # The routing drawn is the trained backbone's: config mode builds it with the
    # checkpoint's weights.
    backbone, _, _ = visualize_routing.config_inputs(image, DET_TOY, checkpoint, None)
    trained = read_checkpoint(checkpoint)['state_dict']  # the tools' checkpoint types allowed
    weights = {k[len('backbone.'):]: v for k, v in trained.items() if k.startswith('backbone.')}
    assert weights.keys() == backbone.state_dict().keys()
    assert all(torch.equal(v, weights[k]) for k, v in backbone.state_dict().items())


@pytest.mark.parametrize('args,message', [
    (['cfg.py', '--checkpoint', 'c.pth', '--n-win', '8'], '--n-win and --size apply to --arch'),
    (['cfg.py', '--checkpoint', 'c.pth', '--size', '512'], '--n-win and --size apply to --arch'),
    (['--arch', 'tiny', '--cfg-options', 'model.backbone.n_win=8'],
     '--cfg-options applies to CONFIG only')])
def test_options_of_the_other_mode_are_refused_not_ignored(args, message, capsys):
    with pytest.raises(SystemExit):
        visualize_routing.parse_args(['image.png', *args])
    assert message in capsys.readouterr().err
