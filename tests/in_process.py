"""``hyperpop ARGS`` through click's runner in the test's own process: the same exit code, stdout
and stderr a user sees, in milliseconds instead of an interpreter's start (each family of
commands keeps one test that starts a real ``hyperpop`` process)."""

from __future__ import annotations

from click.testing import CliRunner

from hyperpop.cli import main


class Ran:
    """What a command printed and returned, named as :class:`subprocess.CompletedProcess`
    names them. A command that raised (a traceback a user would see) fails the test."""

    def __init__(self, args: tuple[object, ...]):
        res = CliRunner().invoke(main, [str(a) for a in args])
        assert res.exception is None or isinstance(res.exception, SystemExit), res.exc_info
        self.returncode: int = res.exit_code
        self.stdout: str = res.stdout
        self.stderr: str = res.stderr


def hyperpop_in_process(*args: object) -> Ran:
    """Run ``hyperpop ARGS`` in this process."""
    return Ran(args)
