"""SIGTERM and SIGHUP raise once, like Ctrl-C; repeats during the cleanup are ignored; handlers are restored."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from pytest_runnerconf import interrupts


@pytest.fixture
def installed() -> Iterator[None]:
    before = signal.getsignal(signal.SIGTERM)
    assert interrupts.install()
    yield
    interrupts.uninstall()
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_the_first_signal_interrupts_and_repeats_do_not(installed: None, signum: int) -> None:
    with pytest.raises(KeyboardInterrupt) as info:
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler runs in this (the main) thread and raises out of the sleep
    assert isinstance(info.value, interrupts.Interrupted)
    assert info.value.signame == signal.Signals(signum).name
    assert interrupts.signal_name(info.value) == signal.Signals(signum).name
    os.kill(os.getpid(), signum)  # during the cleanup: recorded, not raised
    time.sleep(0.05)
    elapsed = interrupts.since_signal()
    assert elapsed is not None and elapsed >= 0


def test_a_plain_keyboard_interrupt_is_sigint() -> None:
    assert interrupts.signal_name(KeyboardInterrupt()) == "SIGINT"
