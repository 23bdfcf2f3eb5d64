"""The pure domain: rules of cross-region settlement as plain synchronous functions.

Nothing here imports asyncio, a database, Kafka, Redis or pydantic (a unit test checks it).
Rule numbers (R1…) refer to DOMAIN.md.
"""
