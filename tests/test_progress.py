"""npad.progress: when training prints plain log lines (batch logs) instead of a bar."""
import pytest

from npad import progress as P


def test_plain_log_only_when_the_bar_is_off_for_want_of_a_terminal(monkeypatch):
    monkeypatch.delenv("NPAD_QUIET", raising=False)
    assert P.plain_log() is True                       # pytest captures: not a terminal
    assert P.plain_log(quiet=True) is False            # asked for silence
    assert P.plain_log(quiet=False) is False           # asked for a bar
    monkeypatch.setattr(P, "_isatty", lambda stream: True)
    assert P.plain_log() is False                      # a terminal shows the bar


@pytest.mark.parametrize("value", ["1", "true", "0", "no"])
def test_npad_quiet_decides_alone(monkeypatch, value):
    monkeypatch.setenv("NPAD_QUIET", value)
    assert P.plain_log() is False


def test_log_line_goes_to_stderr_whole(capsys):
    P.log_line("train 1/3: loss 0.5")
    out = capsys.readouterr()
    assert out.err == "train 1/3: loss 0.5\n" and out.out == ""
