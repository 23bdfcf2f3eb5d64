"""Experiment: the bare pipeline with two transactional hops instead of three.

    python -m loadtest.latency_probe reference --runs 3 --seconds 20 --rate 21.6 \
        --reference-module loadtest.experiments.two_hops

The ``eligible`` hop publishes straight to settlement.priced, as a pricing stage that also ran
the eligibility checks would; the ``priced`` hop still runs but its topic stays empty. What would
folding eligibility into pricing's stage (one Kafka transaction and one delivery fewer per
settlement) buy in latency and CPU? Result: docs/BENCHMARKS.md, "Fewer hops".
"""

from __future__ import annotations

from loadtest import reference_pipeline as ref
from yidi.platform.topics import SETTLEMENT_ELIGIBLE, SETTLEMENT_PRICED, SETTLEMENT_REQUESTS

ref.HOPS["eligible"] = (SETTLEMENT_REQUESTS, SETTLEMENT_PRICED)
ref.HOPS["priced"] = (SETTLEMENT_ELIGIBLE, SETTLEMENT_PRICED)  # idle: nothing is published to its topic

if __name__ == "__main__":
    ref.main()
