"""`python tests/jobs/signal_entry.py TEXT ARGS…` is `vidpipe ARGS…` in which the first record of the
`vidpipe.jobs` loggers whose message contains TEXT sends the process SIGTERM from inside a logging handler: the
job's signal handler then raises `Interrupted` inside `StreamHandler.emit`, whose `except Exception` hands it to
`handleError` (which prints "--- Logging error ---" and returns), as when a real SIGTERM lands while the job logs.
Production code holds no test hook: this script adds the handler before the CLI starts."""

from __future__ import annotations

import logging
import signal
import sys


class SignallingHandler(logging.StreamHandler):
    """Sends SIGTERM while formatting the first record that contains `text`, then writes it as usual."""

    def __init__(self, text: str) -> None:
        super().__init__(sys.stderr)
        self.text, self.fired = text, False

    def format(self, record: logging.LogRecord) -> str:
        if not self.fired and self.text in record.getMessage():
            self.fired = True
            # not os.kill: raise_signal delivers to this thread and runs the Python handler before it returns,
            # so the handler's exception is raised here, inside emit, every time
            signal.raise_signal(signal.SIGTERM)
        return super().format(record)


if __name__ == "__main__":
    text = sys.argv.pop(1)
    # `vidpipe.jobs`, not `vidpipe`: the CLI replaces the handlers of `vidpipe` when it sets up logging
    logging.getLogger("vidpipe.jobs").addHandler(SignallingHandler(text))
    from vidpipe.cli.app import main

    sys.argv[0] = "vidpipe"
    main()
