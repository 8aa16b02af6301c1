"""A private event loop that blocking callers drive themselves.

The sync wrapper needs an event loop of its own: the caller's thread may have
none (a script) or may be running one that must not be re-entered (a Jupyter
cell, an ``async def`` calling sync code). Running that loop forever in a
background thread costs two thread hand-offs per call. ``CallerDrivenLoop``
avoids them in the common case:

- A caller whose thread runs no event loop, arriving while no thread runs the
  private loop, becomes the *driver*: it runs the loop in its own thread until
  its coroutine is done, with no hand-off at all.
- A caller arriving while another thread drives hands its coroutine to the
  loop and waits. The driver keeps running the loop until every coroutine
  handed to it has finished, so none is left behind.
- A caller whose thread already runs a loop hands its coroutine over and, when
  nobody drives, starts a short-lived thread that drives until the loop is idle.

Between calls the loop does not run at all, so the wrapper leaves no thread
behind and the interpreter can always exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ._errors import ExecutionStoreError

_T = TypeVar("_T")


class CallerDrivenLoop:
    """An event loop run by the threads that call ``run``, one thread at a time."""

    def __init__(self) -> None:
        # Reentrant: a future that is already done runs its done callback,
        # which takes this lock, inside add_done_callback.
        self._state = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._driver: threading.Thread | None = None
        self._handed_over: set[concurrent.futures.Future[Any]] = set()
        self._close_when_idle: asyncio.AbstractEventLoop | None = None

    @property
    def started(self) -> bool:
        """Whether the loop exists, that is, whether ``run`` was called."""
        return self._loop is not None

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coroutine`` on the private loop and return its result.

        Ctrl-C raises KeyboardInterrupt and cancels the coroutine, whether
        the caller drives the loop or waits for another driver.
        """
        with self._state:
            if self._driver is threading.current_thread():
                coroutine.close()
                raise ExecutionStoreError(
                    "a SyncExecutionStoreService method was called from a "
                    "coroutine that the wrapper itself runs; await the "
                    "ExecutionStoreService method instead"
                )
            loop = self._ensure_loop()
            if self._driver is None and not _thread_runs_a_loop():
                self._driver = threading.current_thread()
                future = None
            else:
                future = self._hand_over(coroutine, loop)

        if future is None:
            return self._drive(loop, coroutine)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop

    def _hand_over(
        self, coroutine: Coroutine[Any, Any, _T], loop: asyncio.AbstractEventLoop
    ) -> concurrent.futures.Future[_T]:
        # Called with self._state held, so a driver about to stop sees this
        # future and keeps the loop running for it.
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        self._handed_over.add(future)
        future.add_done_callback(self._forget_future)
        if self._driver is None:
            self._start_helper_driver(loop)
        return future

    def _start_helper_driver(self, loop: asyncio.AbstractEventLoop) -> None:
        # Called with self._state held.
        driver = threading.Thread(
            target=self._drain, args=(loop,), name="execstore-loop", daemon=True
        )
        self._driver = driver
        driver.start()

    def _forget_future(self, future: concurrent.futures.Future[Any]) -> None:
        with self._state:
            self._handed_over.discard(future)

    def _drive(
        self, loop: asyncio.AbstractEventLoop, coroutine: Coroutine[Any, Any, _T]
    ) -> _T:
        task = loop.create_task(coroutine)
        try:
            return _run_interruptibly(loop, task)
        except BaseException:
            # An interrupt that reached the loop some other way leaves the task
            # pending: cancel it now rather than let it run on a later call.
            if not task.done():
                task.cancel()
                loop.run_until_complete(asyncio.wait([task]))
            raise
        finally:
            self._drain(loop)

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Run the loop until every handed-over coroutine is done, then let go.

        If the drain itself is interrupted, a helper thread takes over, so the
        callers still waiting are not left without a driver.
        """
        try:
            while True:
                with self._state:
                    pending = list(self._handed_over)
                    if not pending:
                        self._let_go(loop)
                        return
                waiters = [asyncio.wrap_future(future, loop=loop) for future in pending]
                loop.run_until_complete(asyncio.wait(waiters))
        except BaseException:
            with self._state:
                self._driver = None
                if self._handed_over:
                    self._start_helper_driver(loop)
            raise

    def _let_go(self, loop: asyncio.AbstractEventLoop) -> None:
        # Called with self._state held, once the loop has nothing left to run.
        self._driver = None
        if self._close_when_idle is loop:
            self._close_when_idle = None
            loop.close()

    def stop(self) -> None:
        """Close the loop, at once or when its driver lets go of it.

        Call it last: the sync wrapper rejects every call after ``close()``.
        """
        with self._state:
            loop, self._loop = self._loop, None
            if loop is None:
                return
            if self._driver is None:
                loop.close()
            else:
                self._close_when_idle = loop

    def forget(self) -> None:
        """Drop the loop without closing it, as a forked child must."""
        self._state = threading.RLock()
        self._loop = None
        self._driver = None
        self._handed_over = set()
        self._close_when_idle = None


def _thread_runs_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Interruption:
    """The task that the main thread is driving, for the SIGINT handler."""

    def __init__(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]):
        self.loop = loop
        self.task = task
        self.interrupted = False


_main_thread_run: _Interruption | None = None


def _on_sigint(signum: int, frame: Any) -> None:
    """Cancel the task the main thread drives; otherwise act as Python's default.

    The loop may be blocked in its selector, where a KeyboardInterrupt raised
    by the default handler is not seen until some I/O arrives.
    ``call_soon_threadsafe`` wakes the loop so the cancellation runs at once.
    """
    run = _main_thread_run
    if run is None:
        signal.default_int_handler(signum, frame)
        return
    run.interrupted = True
    run.loop.call_soon_threadsafe(run.task.cancel)


def _install_sigint_handler() -> bool:
    # Only Python's default handler is replaced, once, and the replacement
    # behaves like it whenever no call is running. A handler that the
    # application installed is left alone.
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(signal.SIGINT)
    if current is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
        return True
    return current is _on_sigint


def _run_interruptibly(loop: asyncio.AbstractEventLoop, task: asyncio.Task[_T]) -> _T:
    """Run ``task`` to completion, turning Ctrl-C into a cancel of the task.

    The coroutine unwinds through its ``finally`` blocks before
    KeyboardInterrupt reaches the caller.
    """
    global _main_thread_run
    if not _install_sigint_handler():
        return loop.run_until_complete(task)

    run = _Interruption(loop, task)
    _main_thread_run = run
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if run.interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        _main_thread_run = None
