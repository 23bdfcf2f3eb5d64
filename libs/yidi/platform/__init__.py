"""Shared plumbing of the services: settings, Kafka, Postgres, Redis, metrics, errors."""
