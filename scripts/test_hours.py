"""Run the test suite with the wall clock moved to other hours of the day.

The worlds the tests simulate end "now" (``tests/service/conftest.py``), so what they
hold at test time (which viewers are present, what is in their carts) depends on the
hour the suite runs. A test that relies on one hour's world fails on CI at another.
This runs ``pytest`` under libfaketime once per shift (``+3h``, ``-90m``, ...): the
clock of every process the tests start moves with it, and monotonic clocks are left
alone. Usage: ``python scripts/test_hours.py [SHIFT ...] [-- PYTEST_ARGS ...]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

DEFAULT_SHIFTS = ("+3h", "+9h", "+15h", "+21h")


def main(argv: list[str]) -> int:
    shifts, pytest_args = argv, ["-x", "--ignore=tests/integration", "tests"]
    if "--" in argv:
        at = argv.index("--")
        shifts, pytest_args = argv[:at], argv[at + 1 :]
    import libfaketime

    _, env_additions = libfaketime.get_reload_information()
    failed = []
    for shift in shifts or DEFAULT_SHIFTS:
        env = {**os.environ, **env_additions, "FAKETIME": shift}
        now = subprocess.run(
            ["date", "-u", "+%Y-%m-%d %H:%M UTC"], env=env, capture_output=True, text=True
        ).stdout.strip()
        print(f"== pytest with the clock moved {shift} (now {now})", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, "-m", "pytest", "-q", *pytest_args], env=env)
        print(f"== {shift}: exit {code} in {time.monotonic() - start:.0f} s", flush=True)
        if code:
            failed.append(shift)
    if failed:
        print(f"failed with the clock moved {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
