"""Safe stops: SIGINT / SIGTERM or a time / step limit make the loop finish its step, save and exit."""
import signal
import time
from typing import Optional

EXIT_LIMIT = 0  # a run that reached its configured limit did what it was asked


class Stopper:
    """Collects stop requests; `reason(steps)` is checked after every optimizer step."""

    def __init__(self, time_limit: Optional[float] = None, step_limit: Optional[int] = None,
                 start: Optional[float] = None):
        self.time_limit, self.step_limit = time_limit, step_limit
        # time_limit counts from the process start (time.monotonic() then), data loading included
        self.start = time.monotonic() if start is None else start
        self.signum: Optional[int] = None
        self._previous = {}

    def install(self) -> None:
        """Catch SIGINT and SIGTERM; a second signal aborts at once (KeyboardInterrupt)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        """Restore the handlers found by install()."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, _frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def reason(self, steps_this_run: int) -> Optional[str]:
        """Why to stop now (a signal, time_limit or step_limit), or None."""
        if self.signum is not None:
            return signal.Signals(self.signum).name
        if self.step_limit is not None and steps_this_run >= self.step_limit:
            return f'step_limit ({self.step_limit} steps)'
        if self.time_limit is not None and time.monotonic() - self.start >= self.time_limit:
            return f'time_limit ({self.time_limit:g} s)'
        return None

    def exit_code(self) -> int:
        """128 + signal number after a signal (the shell convention), else 0."""
        return 128 + self.signum if self.signum is not None else EXIT_LIMIT
