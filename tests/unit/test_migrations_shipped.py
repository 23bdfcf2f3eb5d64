"""A migration is never edited once it has shipped: a database that applied its first text never
runs the second (clearing's 007 was rewritten in place in session 6; 008 repairs the databases
that ran the first). Each file's digest is pinned here; a new migration adds its line.
``migrate`` also logs an applied migration whose text changed (tests/integration/test_clearing_migrations.py)."""

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The first 16 hex digits of each migration's sha256, as shipped.
SHIPPED = {
    "services/clearing/migrations/001_init.sql": "35d4ca135e07bb15",
    "services/clearing/migrations/002_prepayment_and_periods.sql": "5ba0bea8d8c4f33c",
    "services/clearing/migrations/003_account_versions.sql": "c7e2884d0280bf95",
    "services/clearing/migrations/004_alert_outbox.sql": "f432ce4e73f460c4",
    "services/clearing/migrations/005_request_hash.sql": "f4a742d22261580f",
    "services/clearing/migrations/006_answers_as_json.sql": "170e86efe0930385",
    "services/clearing/migrations/007_statement_clears_accounts.sql": "35b76d6821b134bb",
    "services/clearing/migrations/008_statement_clears_accounts_either_way.sql": "d7d7eefc2c8b555d",
    "services/clearing/migrations/009_statement_clears_accounts_money.sql": "7a62ec3d5db0cdc3",
    "services/clearing/migrations/010_alert_level.sql": "d1d5346a3d517d53",
    "services/clearing/migrations/011_period_totalled.sql": "34130b48bab0813f",
    "services/clearing/migrations/012_undo_waiting.sql": "9a1a995a19c38c44",
    "services/clearing/migrations/013_sums_in_24_digits.sql": "c80c90fa1e1f64ad",
    "services/clearing/migrations/014_period_cuts.sql": "0efe64283c59a587",
    "services/clearing/migrations/015_refusal_warned.sql": "1b3dc535d692563a",
    "services/clearing/migrations/016_statement_confirmations.sql": "cbcdc8bd7646de3b",
    "services/eligibility/migrations/001_init.sql": "ec027197a529a8de",
    "services/eligibility/migrations/002_person_source_time.sql": "6841f8914204d212",
    "services/eligibility/migrations/003_person_source_time_backfill.sql": "eb3325b68145fc37",
    "services/eligibility/migrations/004_person_source_time_ahead.sql": "fd4a002fbd6a84fb",
    "services/eligibility/migrations/005_cache_stale.sql": "934f5794c3137dbe",
    "services/eligibility/migrations/006_person_insured_before.sql": "6f8ebfce39d4d6e7",
    "services/filing/migrations/001_init.sql": "d2f322868db85195",
    "services/filing/migrations/002_history_who_and_why.sql": "3557ef4ce7e9c0be",
    "services/filing/migrations/003_request_hash.sql": "56117a3952a0623e",
    "services/filing/migrations/004_earlier_versions.sql": "86a26ee284861b03",
    "services/filing/migrations/005_person_insurance.sql": "271d6bd85e9788bb",
    "services/filing/migrations/006_person_type.sql": "4e49a9dec6194210",
    "services/filing/migrations/007_pending_index.sql": "9c8f59634c567384",
    "services/filing/migrations/008_decided_by_place.sql": "3396e212f3d7c027",
    "services/pricing/migrations/001_init.sql": "0337f14f600b0e89",
    "services/pricing/migrations/002_prepayment_mirror.sql": "c445d163e25aea16",
    "services/pricing/migrations/003_kept_messages_as_json.sql": "ce3764cedea63b38",
    "services/pricing/migrations/004_one_settlement_per_visit.sql": "84f1e1b8c3344c10",
    "services/pricing/migrations/005_visits_of_earlier_settlements.sql": "bc3380b5ed8b1b7b",
    "services/pricing/migrations/006_balances_in_24_digits.sql": "5f7739515be53224",
    "services/pricing/migrations/007_counters_in_24_digits.sql": "974a4f67b5a29457",
    "services/pricing/migrations/008_decided_by_place.sql": "88c982ddfb74d77e",
    "services/pricing/migrations/009_reference_source_time.sql": "bebe87526000fda7",
    # Applied to every service's schema after its own (yidi.platform.db.migrate).
    "libs/yidi/platform/migrations/platform_001_stage_progress.sql": "7032438c7ed1b997",
    "libs/yidi/platform/migrations/platform_002_progress_went_back.sql": "b153b681b7471084",
    "libs/yidi/platform/migrations/platform_003_progress_reached.sql": "63375a4c80ccc611",
}


def test_no_shipped_migration_is_edited_and_every_migration_is_pinned():
    found = {str(p.relative_to(ROOT)): hashlib.sha256(p.read_bytes()).hexdigest()[:16]
             for p in sorted([*ROOT.glob("services/*/migrations/*.sql"), *ROOT.glob("libs/yidi/platform/migrations/*.sql")])}
    edited = sorted(name for name, digest in found.items() if name in SHIPPED and SHIPPED[name] != digest)
    assert edited == [], "a shipped migration was edited: put the change in a new migration"
    assert sorted(set(found) - set(SHIPPED)) == [], "a new migration: add its digest to SHIPPED"
    assert sorted(set(SHIPPED) - set(found)) == [], "a shipped migration was removed"
