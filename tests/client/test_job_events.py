"""A job event's plain line shows what an orchestrator or a site sent as text, with no
terminal escape sequence of theirs."""

from __future__ import annotations

from oncofed.client.events import JobEvent

ESCAPES = "\x1b[2J\x1b]8;;https://evil.example\x1b\\"


def test_an_event_line_carries_no_escape_sequence_from_names_or_reasons() -> None:
    closed = JobEvent("round_closed", "j", 2, "train", metrics={f"auc{ESCAPES}": 0.71234})
    answered = JobEvent("site_answered", "j", 2, "train", f"gamma{ESCAPES}", "declined",
                        detail=f"no{ESCAPES}")  # fmt: skip
    for event in (closed, answered):
        line = event.line()
        assert "\x1b" not in line and "\a" not in line, repr(line)
    assert closed.line().startswith("round 2 (train) closed: auc") and "0.7123" in closed.line()
    assert "gamma" in answered.line() and "declined: no" in answered.line()
