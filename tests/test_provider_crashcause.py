"""provider.crashcause: the line of a replica's output that says why it failed, masked and bounded."""

from __future__ import annotations

from provider.crashcause import MAX_CAUSE, CrashCause

GUNICORN_BOOT_FAILURE = """\
[2026-12-04 01:49:37 +0000] [444] [ERROR] Exception in worker process
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/gunicorn/arbiter.py", line 752, in spawn_worker
    worker.init_process()
  File "/srv/fn/handler.py", line 3, in load
    raise RuntimeError("weights file /models/w.pt not found")
RuntimeError: weights file /models/w.pt not found
weights file /models/w.pt not found
[2026-12-04 01:49:37 +0000] [439] [ERROR] Worker (pid:444) exited with code 3.
[2026-12-04 01:49:37 +0000] [439] [ERROR] Reason: Worker failed to boot.
"""


def fed(text: str, env: dict | None = None) -> CrashCause:
    cause = CrashCause(env or {})
    for line in text.splitlines(keepends=True):
        cause.feed(line)
    return cause


def test_the_cause_is_the_exception_line_of_the_last_traceback():
    assert fed(GUNICORN_BOOT_FAILURE).cause() == "RuntimeError: weights file /models/w.pt not found"
    syntax = 'Traceback (most recent call last):\n  File "h.py", line 1\n    def f(x)\n            ^\n' \
             "SyntaxError: expected ':'\n"
    assert fed(GUNICORN_BOOT_FAILURE + syntax).cause() == "SyntaxError: expected ':'"


def test_a_watchdog_configuration_error_is_a_cause_and_plain_output_is_not():
    assert fed("watchdog: configuration error: max_batch_size=0: must be >= 1\n").cause() == \
        "watchdog: configuration error: max_batch_size=0: must be >= 1"
    assert fed("loading the model\nERROR something the handler printed\n").cause() == ""


def test_secret_looking_values_and_url_passwords_are_masked():
    env = {"API_TOKEN": "abcd-1234", "DB_PASSWORD": "pw12", "PATH_KEY": "on", "MODEL": "resnet"}
    line = ("Traceback (most recent call last):\nValueError: resnet refused abcd-1234 and pw12 at "
            "redis://:s3cr3t@db:6379/0 and https://bob:hunter2@h/x (on)\n")
    assert fed(line, env).cause() == \
        "ValueError: resnet refused *** and *** at redis://:***@db:6379/0 and https://bob:***@h/x (on)"


def test_the_cause_is_bounded_after_masking():
    secret = "s" * 40
    long = "Traceback (most recent call last):\nOSError: " + "x" * (MAX_CAUSE - 20) + secret + "y" * 50 + "\n"
    cause = fed(long, {"SECRET": secret}).cause()
    assert len(cause) == MAX_CAUSE and cause.endswith("...") and "sss" not in cause
