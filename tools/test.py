"""Evaluate a checkpoint of a BiFormer detector or segmentor with mmengine's Runner.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--show-dir DIR]
        [--cfg-options KEY=VALUE ...] [--skip-data-check] [--launcher {none,pytorch,slurm}]

The metrics are those of the config's ``test_evaluator``; see ``python tools/test.py -h``.
"""
from biformer_mm.engine import build_runner, config_or_exit, test_config, test_parser


def main() -> None:
    runner = build_runner(config_or_exit(test_parser(), test_config))
    runner.test()


if __name__ == '__main__':
    main()
