"""Which consumer groups ``yidi-load --wait`` waits for: a group that exists only in some
configurations (pricing's prepayment mirror, under the refuse policy) only when asked for."""

from yidi.platform.topics import FEED_READERS, PREPAYMENT_STATUS, REFDATA_PERSONS
from yidi.refdata.loader import consumers_to_wait_for


def test_the_prepayment_mirror_is_waited_for_only_when_asked():
    default = consumers_to_wait_for("ns.")
    topics = {topic for _, topic in default}
    assert f"ns.{REFDATA_PERSONS}" in topics and f"ns.{PREPAYMENT_STATUS}" not in topics
    asked = consumers_to_wait_for("ns.", optional=[PREPAYMENT_STATUS])
    assert ("ns.yidi-pricing-feed-clearing.prepayment-status", f"ns.{PREPAYMENT_STATUS}") in asked
    assert len(asked) == len(FEED_READERS) + 2  # every feed reader, and the filing stages
