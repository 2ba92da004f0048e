"""A whole-run time estimate for ``moma quickstart``.

Each stage has its own progress bar; this says how long the *whole* run will take. Before
the first stage it quotes the run's measured time on a reference machine (the machine kinds
we have met differ 2x: a run that takes 22 minutes on one takes 40 on another). After each
stage it scales the reference times of the stages still to run by how long this machine
took, relative to the reference, for the stages it ran so far.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def fmt_duration(seconds: float) -> str:
    """``1h02m03s`` / ``2m03s``."""
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


@dataclass(frozen=True)
class Reference:
    """Measured wall time of every stage of one budget on one machine."""

    machine: str  # what it was measured on, and where it is recorded
    stage_s: dict[str, float]  # stage name -> seconds


@dataclass
class RunEta:
    """Estimates for one invocation: ``todo`` are the stages it will run, in order."""

    ref: Reference
    todo: list[str]
    done_s: dict[str, float] = field(default_factory=dict)  # stages run here -> seconds

    def before(self) -> str:
        """The line logged before the first stage."""
        total = sum(self.ref.stage_s.get(n, 0.0) for n in self.todo)
        return (
            f"these stages took {fmt_duration(total)} on {self.ref.machine}; "
            "an estimate for this machine follows the first stage"
        )

    def after(self, name: str, seconds: float) -> str | None:
        """The line logged after stage ``name`` took ``seconds``; ``None`` when nothing is
        left to run or no stage run so far has a reference time."""
        self.done_s[name] = seconds
        left = [n for n in self.todo if n not in self.done_s]
        timed = [n for n in self.done_s if self.ref.stage_s.get(n)]
        if not left or not timed:
            return None
        ratio = sum(self.done_s[n] for n in timed) / sum(self.ref.stage_s[n] for n in timed)
        remaining = ratio * sum(self.ref.stage_s.get(n, 0.0) for n in left)
        elapsed = sum(self.done_s.values())
        return (
            f"{fmt_duration(elapsed)} so far, about {fmt_duration(remaining)} left "
            f"({len(left)} stage(s); this machine has taken {ratio:.2f}x the reference's time)"
        )
