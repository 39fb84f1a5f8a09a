"""harvest.progress: the one progress bar, drawn on stderr so that stdout keeps results only."""

from __future__ import annotations

import pytest

from harvest.progress import ProgressBar


def test_a_bar_draws_on_stderr_and_leaves_its_last_state(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with ProgressBar("fetch", 3) as bar:
        bar.advance()
        bar.advance(2, info="12.5 chips/s  kept 3")
        bar.update(total=4, completed=4)
        assert bar.total == 4
    out, err = capsys.readouterr()
    assert out == ""
    assert "fetch" in err and "4/4" in err and "12.5 chips/s  kept 3" in err


def test_a_disabled_bar_draws_nothing_and_takes_every_call(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with ProgressBar("fetch", 3, enabled=False) as bar:
        assert not bar.enabled
        bar.advance()
        bar.update(completed=2, total=5, info="x")
        assert bar.total == 0
    bar.close()  # twice is fine
    assert capsys.readouterr() == ("", "")
