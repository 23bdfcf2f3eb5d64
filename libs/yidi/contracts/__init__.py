"""Wire contracts: every Kafka message is one of these pydantic models (CONTRACT.md field names)."""
