"""Train a BiFormer detector or segmentor with mmengine's Runner.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CHECKPOINT]] [--amp]
        [--auto-scale-lr] [--cfg-options KEY=VALUE ...] [--skip-data-check]
        [--launcher {none,pytorch,slurm}]

Detection and segmentation configs alike; see ``python tools/train.py -h``.
"""
from biformer_mm.engine import build_runner, config_or_exit, train_config, train_parser


def main() -> None:
    runner = build_runner(config_or_exit(train_parser(), train_config))
    runner.train()


if __name__ == '__main__':
    main()
