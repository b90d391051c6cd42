"""Imported first by the runner's fork server (runner/worker.py's context()). Ctrl-C in a terminal sends
SIGINT to the whole foreground process group: the run's parent, its fork server and the worker
of the measurement under way. The parent alone handles it (it kills the worker, keeps what
finished and says how to resume); the server and the workers it forks ignore SIGINT, so that an
interrupted import in the server or a step in a worker prints no traceback of its own."""

import signal

signal.signal(signal.SIGINT, signal.SIG_IGN)
