"""Progress lines for `python -m demo`: which experiment, which sampling pass, which step, and the
time since the run started.

The samplers (host.Host.sample, pix2pix_zero.edit) call `step(done, total)` after every step. It
prints nothing unless `python -m demo` has turned a Reporter on (`reporting`), so the tests and
any other caller stay silent. Printing never touches the samples, so the numbers do not change.
"""
import contextlib
import sys
import time

_reporter = None


class Reporter:
    def __init__(self, experiments, stream=None, every=10.0, clock=time.monotonic):
        self.experiments, self.every, self.clock = experiments, every, clock
        self.stream = stream or sys.stdout
        self.start = clock()
        self.index, self.name, self.passes, self.last = 0, None, 0, None

    def line(self, text):
        print(f"[{self.clock() - self.start:5.0f} s] {text}", file=self.stream, flush=True)

    def experiment(self, name):
        self.index, self.name, self.passes = self.index + 1, name, 0
        self.line(f"experiment {self.index}/{self.experiments}: {name}")

    def step(self, done, total):
        """A line at the last step of a pass, and in between at most one per `every` seconds."""
        if done == 1:
            self.passes += 1
        now = self.clock()
        if done == total or self.last is None or now - self.last >= self.every:
            self.last = now
            self.line(f"{self.name}: sampling pass {self.passes}, step {done}/{total}")


@contextlib.contextmanager
def reporting(reporter):
    global _reporter
    previous, _reporter = _reporter, reporter
    try:
        yield reporter
    finally:
        _reporter = previous


def step(done, total):
    if _reporter is not None:
        _reporter.step(done, total)
