"""Progress lines: every 10% to a file, one rewritten line on a terminal, the finished line once."""

from __future__ import annotations

import io

from cop_profiler.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_calls_after_the_last_step_write_nothing_more():
    # the profiler reports every retry of a noisy point, and retries run after the last point's first
    # timing: a bert-sized model wrote 25 more "[97/97] 100%" lines, a terminal as many new lines
    log = io.StringIO()
    progress = Progress(log)
    for done in (1, 2, 3, 4, 4, 4):
        progress(done, 4, f"step {done}")
    assert [line.split()[0] for line in log.getvalue().splitlines()] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    term = Terminal()
    progress = Progress(term)
    for done in (1, 2, 2, 3, 3, 3):
        progress(done, 3, f"step {done}")
    assert term.getvalue().count("\n") == 1 and term.getvalue().endswith("\n")
    quiet = io.StringIO()
    Progress(quiet, enabled=False)(1, 1, "x")
    assert quiet.getvalue() == ""
