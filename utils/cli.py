"""Entry-point wrapper: user errors become one line on stderr and exit code 2."""
import sys
from typing import Callable

from utils.errors import UserError


def run_cli(main: Callable[[], None]) -> None:
    """Run main(); a UserError prints 'error: <message>' and exits 2, Ctrl-C exits 130."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
