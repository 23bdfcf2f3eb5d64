"""Load tests: a day's national volume generated, replayed against Yidi, measured (docs/BENCHMARKS.md).

- ``world``              the reference data of a generated day (regions, facilities, persons, filings)
- ``generator``          the day's requests as JSON lines, deterministic by seed
- ``replay``             publishes a day at a chosen speed and checks every answer
- ``checks``             pure checks: exactly one answer per send, ledger totals = answer totals
- ``reference_pipeline`` the same Kafka hops doing no work, the yardstick for throughput
- ``bench_eligibility``  decisions per second of the eligibility handler, Redis warm and Redis down
- ``bench``              what ``make bench`` runs
"""
