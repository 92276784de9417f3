"""`python -m demo` says where it is while it runs; the samplers stay silent for everyone else."""
import io

import torch

from attnguide.demo import model as models
from attnguide.demo import progress
from attnguide.demo.host import Host


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_reporter_prints_each_pass_end_and_at_most_one_line_per_interval():
    clock, out = Clock(), io.StringIO()
    reporter = progress.Reporter(2, stream=out, every=10.0, clock=clock)
    with progress.reporting(reporter):
        reporter.experiment("PAG")
        for _ in range(2):
            for i in range(20):
                clock.now += 3.0
                progress.step(i + 1, 20)
    progress.step(1, 20)  # after the run: no reporter, no line
    lines = out.getvalue().splitlines()
    assert lines[0] == "[    0 s] experiment 1/2: PAG"
    assert "[   60 s] PAG: sampling pass 1, step 20/20" in lines and "[  120 s] PAG: sampling pass 2, step 20/20" in lines
    steps = [line for line in lines if "step" in line]
    times = [float(line[1:6]) for line in steps]
    assert all(b - a >= 10.0 or "20/20" in line for (a, b, line) in zip(times, times[1:], steps[1:]))
    assert 8 <= len(steps) <= 12  # 120 s of steps: about one line per 10 s, plus the two pass ends


def test_sampler_is_silent_without_a_reporter(capsys):
    model, _ = models.load()
    cond = model.text.encode(["a red circle"])
    Host(model).sample(torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)), cond,
                       model.text.encode([""]), 2.0, steps=2)
    assert capsys.readouterr().out == ""
