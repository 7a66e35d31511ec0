"""Live progress for the person at the terminal: each server's startup stage and how long it has taken (one line
per stage change), and how far each load point has got (requests done / total, tokens/s so far).

On a terminal a load point is a rich progress bar; elsewhere (CI logs, pipes) it is a plain line every
PLAIN_EVERY_S seconds; under `pytest -q` (and in xdist workers, whose output nobody sees) nothing is shown. The
final numbers of a point are printed as a line when it finishes, on a terminal or not.

Inside pytest every write goes around output capturing (`global_and_fixture_disabled`, as pytest's live logging
does), so it reaches the terminal while a test runs.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich is imported when a bar is shown
    from rich.progress import Progress as Bar
    from rich.progress import TaskID

PLAIN_EVERY_S = 10.0


class Progress:
    """Quiet when made without a console."""

    def __init__(self, console=None, suspend: Callable[[], AbstractContextManager] = contextlib.nullcontext,
                 plain_every_s: float = PLAIN_EVERY_S):
        self.console = console
        self.suspend = suspend
        self.plain_every_s = plain_every_s
        self.mid_line = False  # pytest has written part of a line (a test's name) that ours must not run into

    @classmethod
    def for_pytest(cls, config) -> Progress:
        if config.getoption("verbose") < 0 or hasattr(config, "workerinput"):
            return cls()
        from rich.console import Console

        capture = config.pluginmanager.getplugin("capturemanager")
        # Decided now: sys.stdout is the real one here (pytest_configure runs with capturing suspended), while during
        # a test its descriptor points into pytest's capture file and would not look like a terminal.
        terminal = sys.stdout.isatty()
        console = Console(file=sys.stdout, soft_wrap=True, highlight=False, force_terminal=terminal,
                          width=shutil.get_terminal_size().columns if terminal else None)
        return cls(console, capture.global_and_fixture_disabled if capture else contextlib.nullcontext)

    @property
    def quiet(self) -> bool:
        return self.console is None

    def pytest_runtest_logstart(self, nodeid, location) -> None:  # a pytest hook (registered by the plugin)
        self.mid_line = True  # pytest has just written a test's file or name, without a newline

    def line(self, text: str) -> None:
        if self.quiet:
            return
        with self.suspend():
            self._newline_once()
            self.console.print(text, markup=False)

    def _newline_once(self) -> None:
        if self.mid_line:
            self.console.print()
            self.mid_line = False

    def stage(self, case_id: str, stage: str, elapsed_s: float) -> None:
        """A server entered a startup stage (or 'ready')."""
        if stage == "ready":
            self.line(f"[server] {case_id}: ready after {elapsed_s:.0f} s")
        else:
            self.line(f"[server] {case_id}: {stage} (at {elapsed_s:.0f} s)")

    def load(self, title: str) -> LoadProgress:
        return LoadProgress(self, title)


class LoadProgress:
    """The points of one workload of one case, in turn: `update` while a point runs, `finished` when it is done."""

    def __init__(self, progress: Progress, title: str):
        self.progress = progress
        self.title = title
        self.point: str | None = None
        self.last_plain = 0.0
        self.bar: Bar | None = None
        self.task: TaskID | None = None

    def update(self, point: str, total: int, done: int, tokens: int, seconds: float) -> None:
        """`tokens` streamed in the `seconds` since the point's timed requests began (0 during warm-up)."""
        if self.progress.quiet:
            return
        now = time.monotonic()
        if point != self.point:
            self._close()
            self.point, self.last_plain = point, now
            if self.progress.console.is_terminal:
                self._open_bar(total)
        rate = tokens / seconds if seconds > 0 else 0.0
        if self.bar is not None and self.task is not None:
            with self.progress.suspend():
                self.bar.update(self.task, completed=done, rate=f"{rate:,.0f} tok/s")
                self.bar.refresh()
        elif now - self.last_plain >= self.progress.plain_every_s:
            self.last_plain = now
            self.progress.line(f"[load] {self.title} {point}: {done}/{total} requests, {rate:,.0f} tok/s, "
                               f"{seconds:.0f} s")

    def finished(self, point: str, text: str) -> None:
        if self.point == point:
            self._close()
            self.point = None
        self.progress.line(f"[load] {self.title} {point}: {text}")

    def _open_bar(self, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        # Refreshed by update() only (no refresh thread: a thread would write while pytest captures output).
        self.bar = Bar(TextColumn(f"[load] {self.title} {self.point}", markup=False), BarColumn(), MofNCompleteColumn(),
                       TextColumn("requests, {task.fields[rate]}"), TimeElapsedColumn(),
                       console=self.progress.console, auto_refresh=False, transient=True, redirect_stdout=False,
                       redirect_stderr=False)
        self.task = self.bar.add_task("load", total=total, rate="0 tok/s")
        with self.progress.suspend():
            self.progress._newline_once()
            self.bar.start()

    def _close(self) -> None:
        if self.bar is not None:
            with self.progress.suspend():
                self.bar.stop()
            self.bar = self.task = None
