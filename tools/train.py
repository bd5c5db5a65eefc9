"""Train a BiFormer detector or segmentor with mmengine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp]
        [--auto-scale-lr] [--overlay OVERLAY] [--cfg-options KEY=VALUE ...]
        [--launcher {none,pytorch,slurm}]

Detection and segmentation configs alike; see ``python tools/train.py -h``.
"""
from biformer_mm.engine import build_runner, train_config, train_parser


def main() -> None:
    args = train_parser().parse_args()
    runner = build_runner(train_config(args))
    runner.train()


if __name__ == '__main__':
    main()
