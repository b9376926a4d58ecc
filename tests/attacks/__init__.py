"""The attack suite: what an attacker or a careless user points LatBot at, one case each, and what happened.

Every case runs in a forked child process of its own, inside a fresh temporary folder, with a time limit.
A case builds its fixtures (not watched), then makes its attack through `Trial.cli` / `Trial.call` /
`Trial.command`, each of which hashes the whole temporary tree before and after (everything except the
paths the command is allowed to write, its `owns`). The outcome is one of

    clean      refused with a one-line `error:` and exit 2 (1 for `verify` findings), nothing else changed
    handled    the case's named behaviour happened (e.g. resume fell back to the previous checkpoint)
    traceback  a Python traceback instead of a message
    silent     accepted without a word, or the named behaviour did not happen (a wrong answer)
    hang       still running after the time limit
    damage     something outside the command's own output changed (checked first: it wins)

and the suite passes when every case ends `clean` or `handled`.

    python -m tests.attacks                   # every case, the table by class (a few minutes on 2 cores)
    python -m tests.attacks --only locks      # one class
    python -m tests.attacks --json out.json   # one row per case
    python -m tests.attacks --tree DIR        # the same cases against another checkout's `latbot/` (before/after)

`tests/test_attacks.py` runs the fast cases in the default test run and the rest under `-m slow`.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
OUTCOMES = ("clean", "handled", "traceback", "silent", "hang", "damage")
GOOD = ("clean", "handled")
CASE_TIMEOUT_S = 60.0
MEMORY_LIMIT = 4 << 30  # bytes of resident memory a case's process may reach
CLASSES = ("checkpoints", "integrity", "runs", "writers", "locks", "bounds", "server", "exit_codes")


@dataclass
class Attack:
    cls: str  # the class of attack, one of CLASSES
    name: str
    fn: Callable[[Trial], None]
    fast: bool = True  # part of the default test run
    timeout_s: float = CASE_TIMEOUT_S

    @property
    def id(self) -> str:
        return f"{self.cls}: {self.name}"


ATTACKS: list[Attack] = []


def attack(cls: str, name: str, *, fast: bool = True, timeout_s: float = CASE_TIMEOUT_S):
    """Register a case: `fn(trial)` builds its fixtures, makes its attack and states what it expects."""
    assert cls in CLASSES, cls

    def deco(fn: Callable[[Trial], None]):
        ATTACKS.append(Attack(cls, name, fn, fast, timeout_s))
        return fn

    return deco


# -- the tree: what must not change --------------------------------------------------------------------------
def tree_digest(root: Path, owns: Iterable[Path] = ()) -> dict[str, str]:
    """{relative path: sha256 of the bytes (or the link target, or 'dir')} under `root`, minus `owns`."""
    owned = [Path(p).resolve() if Path(p).is_absolute() else (root / p).resolve() for p in owns]
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = here / name
            full = Path(os.path.abspath(path))
            if any(full == o or o in full.parents for o in owned):
                continue
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            elif path.is_file():
                h = hashlib.sha256()
                with path.open("rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
                out[rel] = h.hexdigest()
            else:
                out[rel] = "special"
    return out


@dataclass
class Result:
    """What one attack call gave: exit code, output, the exception (None for a clean exit), what changed."""

    exit_code: int | None
    output: str
    exception: BaseException | None = None
    value: object = None
    changed: list[str] = field(default_factory=list)


class Verdict(Exception):
    """Raised inside a case to end it with an outcome."""

    def __init__(self, outcome: str, why: str = ""):
        super().__init__(why)
        self.outcome, self.why = outcome, why


class Trial:
    """One case's temporary world: `tmp` is watched; `work` is the folder commands run in."""

    def __init__(self, tmp: Path, tree: Path | None):
        self.tmp = tmp
        self.work = tmp / "work"
        self.work.mkdir()
        self.tree = tree
        self.outcome: str | None = None
        self.why = ""

    # -- making the attack ---------------------------------------------------------------------------------
    def cli(self, *args: object, owns: Iterable[Path] = (), stdin: str | None = None) -> Result:
        """`latbot ARGS` in this process (the case's child), watched."""
        from typer.testing import CliRunner

        from latbot.cli import app

        def go():
            old = os.getcwd()
            os.chdir(self.work)
            try:
                return CliRunner().invoke(app, [str(a) for a in args], input=stdin, catch_exceptions=True)
            finally:
                os.chdir(old)

        r, changed = self._watched(go, owns)
        exc = r.exception if r.exception is not None and not isinstance(r.exception, SystemExit) else None
        out = r.output + (r.stderr if r.stderr_bytes is not None else "")
        return Result(r.exit_code, out, exc, changed=changed)

    def call(self, fn: Callable[[], object], owns: Iterable[Path] = ()) -> Result:
        """A Python API call, watched: a `LatBotError` counts as a clear refusal (exit 2)."""
        from latbot.errors import LatBotError

        def go():
            try:
                return Result(0, "", value=fn())
            except LatBotError as e:
                return Result(getattr(e, "exit_code", 2), f"error: {e}", None)
            except Exception as e:
                return Result(None, repr(e), e)

        r, changed = self._watched(go, owns)
        r.changed = changed
        return r

    def command(self, *args: object, owns: Iterable[Path] = (), timeout: float = 45, env: dict | None = None):
        """`latbot ARGS` as a real subprocess (signals, locks, several processes), watched."""
        import subprocess

        def go():
            p = subprocess.run(
                [*latbot_command(self.tree), *(str(a) for a in args)],
                cwd=self.work,
                capture_output=True,
                text=True,
                timeout=timeout,
                env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
            )
            return Result(p.returncode, p.stdout + p.stderr)

        r, changed = self._watched(go, owns)
        r.changed = changed
        return r

    def _watched(self, go, owns):
        before = tree_digest(self.tmp, owns)
        try:
            r = go()
        finally:  # an exception that escapes the command (a BaseException) still counts its damage first
            after = tree_digest(self.tmp, owns)
            changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
            if changed:
                self.end("damage", f"changed outside the command's own output: {', '.join(changed[:4])}")
        return r, changed

    # -- what is expected ----------------------------------------------------------------------------------
    def expect_refused(self, r: Result, mentions: Iterable[str] = (), codes: tuple[int, ...] = (2,)) -> None:
        """A clean refusal: no traceback, an `error:` line, one of `codes`, and each of `mentions` in it."""
        if r.exception is not None or "Traceback (most recent call last)" in r.output:
            self.end("traceback", (repr(r.exception) if r.exception else r.output)[-300:])
        if r.exit_code == 0:
            self.end("silent", "accepted (exit 0): " + r.output[-200:])
        if r.exit_code not in codes or not ("error:" in r.output or "problem:" in r.output):
            self.end("traceback", f"exit {r.exit_code} without a clear error line: {r.output[-300:]}")
        missing = [m for m in mentions if m.lower() not in r.output.lower()]
        if missing:
            self.end("silent", f"the message does not name {missing}: {r.output.strip()[-300:]}")
        self.end("clean")

    def expect(self, ok: bool, what: str, r: Result | None = None) -> None:
        """A named behaviour: `ok` → handled (if nothing worse happened); not ok → silent (a wrong result)."""
        if r is not None and (r.exception is not None or "Traceback (most recent call last)" in r.output):
            self.end("traceback", (repr(r.exception) if r.exception else r.output)[-300:])
        if not ok:
            self.end("silent", what + (f" — output: {r.output.strip()[-300:]}" if r is not None else ""))

    def handled(self) -> None:
        self.end("handled")

    def end(self, outcome: str, why: str = "") -> None:
        raise Verdict(outcome, why)


def latbot_command(tree: Path | None) -> list[str]:
    """How to start `latbot` as a subprocess, from this checkout or from `tree`'s `latbot/`."""
    if tree is None:
        return [sys.executable, "-m", "latbot"]
    boot = (
        f"import sys; sys.path.insert(0, {str(tree)!r}); "
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
        "from latbot.cli import main; sys.argv[0] = 'latbot'; main()"
    )
    return [sys.executable, "-c", boot]


def use_tree() -> None:
    """Make `import latbot` find the checkout at sys.path[0] instead of the editable install."""
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f)]
    for name in [m for m in sys.modules if m == "latbot" or m.startswith("latbot.")]:
        del sys.modules[name]


# -- running ------------------------------------------------------------------------------------------------
def _child(a: Attack, tmp: Path, tree: Path | None, write) -> None:
    os.setpgid(0, 0)  # a group of its own: a hang is ended with everything it started
    t = Trial(tmp, tree)
    try:
        a.fn(t)
        outcome, why = "silent", "the case ended without a verdict"
    except Verdict as v:
        outcome, why = v.outcome, v.why
    except BaseException as e:
        import traceback

        outcome, why = "traceback", "".join(traceback.format_exception(e))[-400:]
    write(f"{outcome}\n{why}")


def run_attack(a: Attack, tree: Path | None = None) -> tuple[str, str]:
    """(outcome, why) of one case, run in a forked child with its time limit."""
    import multiprocessing as mp
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="latbot-attack-"))
    ctx = mp.get_context("fork")
    reader, writer = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(a, tmp, tree, writer.send), daemon=False)
    proc.start()
    writer.close()
    try:
        outcome, why = "hang", f"still running after {a.timeout_s:.0f} s"
        deadline = time.monotonic() + a.timeout_s
        while time.monotonic() < deadline:
            if reader.poll(0.25):
                outcome, why = reader.recv().split("\n", 1)
                break
            rss = _rss_bytes(proc.pid)
            if rss > MEMORY_LIMIT:  # a blow-up is a hang that would take the machine down with it
                outcome, why = "hang", f"memory grew past {MEMORY_LIMIT >> 30} GiB ({rss >> 20} MiB)"
                break
    except EOFError:
        outcome, why = "traceback", f"the case's process died (exit {proc.exitcode})"
    finally:
        if proc.is_alive():
            _kill_group(proc.pid)
        proc.join(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return outcome, why


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _kill_group(pid: int) -> None:
    """The case's child and everything it started (its own process group)."""
    import signal

    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def load_all() -> list[Attack]:
    """Import every case module (one per class) and return the registered cases."""
    for cls in CLASSES:
        importlib.import_module(f"tests.attacks.{cls}")
    return ATTACKS


def table(rows: list[tuple[Attack, str]]) -> str:
    """Cases per class × outcome, as a Markdown table."""
    lines = ["| class | cases | " + " | ".join(OUTCOMES) + " |", "|---|---:|" + "---:|" * len(OUTCOMES)]
    totals = dict.fromkeys(OUTCOMES, 0)
    for cls in CLASSES:
        mine = [o for a, o in rows if a.cls == cls]
        if not mine:
            continue
        counts = [mine.count(o) for o in OUTCOMES]
        for o, c in zip(OUTCOMES, counts, strict=True):
            totals[o] += c
        lines.append(f"| {cls} | {len(mine)} | " + " | ".join(map(str, counts)) + " |")
    lines.append(f"| **all** | {len(rows)} | " + " | ".join(str(totals[o]) for o in OUTCOMES) + " |")
    return "\n".join(lines)
