"""`python -m fedsim`: the command line, with Ctrl-C deferred from the first moment."""

from fedsim import interrupt

interrupt.install()   # before the (heavier) imports below

from fedsim.cli import console  # noqa: E402

console()
