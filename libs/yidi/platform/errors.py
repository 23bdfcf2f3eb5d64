"""The one exception tree of Yidi. Third-party errors are mapped to it at one boundary each."""

from __future__ import annotations


class YidiError(Exception):
    """Base of every error Yidi raises on purpose."""


class PermanentError(YidiError):
    """Retrying cannot help (bad payload, unknown policy): answer with an error and dead-letter."""


class InvalidMessage(PermanentError):
    """A message that does not parse or does not validate against its contract."""

    def __init__(self, reason: str, *, msgid: str | None = None, reply_to: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.msgid = msgid
        self.reply_to = reply_to


class BadData(PermanentError):
    """The database refused a value as data (out of range, a character it cannot store, a check):
    retrying the batch cannot help. The stage finds the record at fault by halving the batch, and
    refuses that record alone (dead letter, and an answer when its msgid can be recovered)."""


class TransientError(YidiError):
    """A dependency is away (database, broker): retry with back-off, never drop."""


class FatalError(YidiError):
    """The process cannot go on (fenced by a newer instance, misconfiguration): stop and let it restart."""


class RaceLost(TransientError):
    """Another instance recorded the same msgid or reqid first (two instances of a stage may both
    hold a partition for a moment during a rebalance): retry, and find the winner's record. A
    stage retries a batch a few times for this, then treats it as a bug (``FatalError``)."""


class DatabaseWentBack(FatalError):
    """A running stage, feed or service check found a partition's ``stage_progress`` row below what
    the service had seen it hold (its batches' records, its committed offsets), or gone
    (yidi.platform.progress): the database went back under the
    service (a failover to a replica that was behind, a restore while it ran). Retrying would handle
    the records after the row's point as if the records before it were there: the service stops,
    and its check at the next start refuses until ``yidi-recover`` has moved its groups back."""
