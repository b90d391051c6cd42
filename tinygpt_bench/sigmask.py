"""SIGINT held back from a child while it starts. A terminal's Ctrl-C goes to its whole
foreground process group, and a child Python starts there (the fork server of curve's workers)
or runs Python code after fork there (a subprocess with a preexec_fn: the browser, Node) would
print a KeyboardInterrupt traceback of its own. Blocked in the starting thread, SIGINT stays
blocked in the child through exec (the harness ends those children itself: they need no Ctrl-C),
and here it is delivered as soon as the block ends and handled as usual."""

from __future__ import annotations

import signal


class sigint_blocked:
    """`with sigint_blocked(): start the child`."""

    def __enter__(self):
        self.old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        return self

    def __exit__(self, *exc):
        signal.pthread_sigmask(signal.SIG_SETMASK, self.old)
