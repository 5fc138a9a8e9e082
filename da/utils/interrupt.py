"""A signal that ends a program (Slurm's SIGTERM at a time limit, SIGUSR2 before it) as a clean exit with a message
that says how to go on, for every program that trains: runs, detection runs, HPO workers."""

from __future__ import annotations

import signal


class Interrupted(SystemExit):
    """Raised in the main thread by the handler; exits like ``sys.exit`` with the message."""


def exit_on_signals(hint: str, signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)) -> None:
    """From now on each of ``signals`` raises :class:`Interrupted` ("stopped by signal X; <hint>")."""

    def stop(signum, frame):
        raise Interrupted(f"stopped by signal {signal.Signals(signum).name}; {hint}")

    for s in signals:
        signal.signal(s, stop)
