"""One plain sentence per student: did it beat the models it learned from, on each protocol?"""

from __future__ import annotations

from collections.abc import Sequence

PROTOCOL_NAMES = {"linear": "the linear probe"}


def _protocol_name(protocol: str) -> str:
    if protocol.startswith("knn-k"):
        return f"kNN k={protocol[len('knn-k') :]}"
    return PROTOCOL_NAMES.get(protocol, protocol)


def beat_sentence(
    rows: Sequence[dict],
    student: str,
    teachers: Sequence[str],
    protocols: Sequence[str],
    who: str | None = None,
) -> str | None:
    """Whether ``student`` scored above every model in ``teachers`` on each of ``protocols``.

    ``rows`` are result records (``name``, ``protocol``, ``value`` in %); ``who`` names the
    ``teachers`` in the sentence (default "its teacher" / "both of its teachers"). Returns
    ``None`` when a needed result is missing.
    """
    value = {(r["name"], r["protocol"]): float(r["value"]) for r in rows}
    parts, wins = [], []
    for p in protocols:
        s = value.get((student, p))
        ts = [value.get((t, p)) for t in teachers]
        if s is None or None in ts:
            return None
        won = all(s > t for t in ts)
        wins.append(won)
        versus = " / ".join(f"{t} {v:.1f}" for t, v in zip(teachers, ts))
        parts.append(f"{_protocol_name(p)} ({s:.1f} vs {versus})")
    who = who or ("both of its teachers" if len(teachers) == 2 else "its teacher")
    if all(wins):
        return f"**{student}** beat {who} on " + " and on ".join(parts) + "."
    if not any(wins):
        return f"**{student}** did not beat {who} on " + " nor on ".join(parts) + "."
    won = [pt for pt, w in zip(parts, wins) if w]
    lost = [pt for pt, w in zip(parts, wins) if not w]
    return (
        f"**{student}** beat {who} on " + " and ".join(won) + ", not on " + " nor ".join(lost) + "."
    )
