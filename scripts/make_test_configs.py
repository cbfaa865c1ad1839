"""Write configs/test/*.yaml, every test of the paper, from utils.test_configs (the single source)."""
import argparse
import os
import sys

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.test_configs import PAIRED_SCALES, paper_configs  # noqa: E402


def render(cfg: dict) -> str:
    """YAML text of a test config with a comment saying where its LR images come from."""
    scale = int(cfg['eval_type'].split('-')[1])
    if scale in PAIRED_SCALES:
        note = "# LR: the MATLAB-bicubic LR_bicubic folder (generated from HR by test.py when missing)\n"
    else:
        note = ("# LR: HR downscaled on the fly with PIL's bicubic, as the paper did "
                "(resize: matlab for MATLAB's)\n")
    return note + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None)


def main() -> None:
    """Write (or with --check, compare) every paper test config."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument('--out', default=os.path.join(os.path.dirname(__file__), '..', 'configs', 'test'))
    p.add_argument('--check', action='store_true', help="exit 1 if a file differs instead of writing")
    args = p.parse_args()
    stale = []
    for name, cfg in paper_configs().items():
        path = os.path.join(args.out, name)
        text = render(cfg)
        if args.check:
            if not os.path.isfile(path) or open(path).read() != text:
                stale.append(name)
            continue
        os.makedirs(args.out, exist_ok=True)
        with open(path, 'w') as f:
            f.write(text)
    if stale:
        print(f"stale test configs: {', '.join(stale)}", file=sys.stderr)
        sys.exit(1)


if __name__ == '__main__':
    main()
