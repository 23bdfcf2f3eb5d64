"""The generated contract documents match the code; the reference-data guide names every field and its
examples load."""

import json
import re
from pathlib import Path

from pydantic import BaseModel

from yidi.contracts.filing import FilingRequest
from yidi.contracts.refdata import (
    BenefitRuleRecord,
    CatalogueRecord,
    FacilityRecord,
    LayerRecord,
    PersonRecord,
    PolicyRecord,
    RegionStatusRecord,
)
from yidi.contracts.schemas import GENERATOR, ROOT, stale
from yidi.refdata.loader import SECTIONS, validate

REFERENCE_DATA_MD = ROOT / "docs" / "reference-data.md"


def test_generated_topics_schemas_and_asyncapi_match_the_code():
    out_of_date = stale()
    assert out_of_date == [], (
        f"generated docs are stale: {out_of_date}; run `.venv/bin/{GENERATOR}` "
        "and commit the result"
    )


def _documented_fields(text: str) -> set[str]:
    """Field names written as `name` in the first column of a Markdown table row."""
    return set(re.findall(r"^\|\s*`([a-z_]+)`", text, flags=re.MULTILINE))


def test_reference_data_guide_documents_every_field_and_section_of_the_loader_file():
    documented = _documented_fields(Path(REFERENCE_DATA_MD).read_text())
    models: tuple[type[BaseModel], ...] = (
        PersonRecord, FacilityRecord, CatalogueRecord, PolicyRecord, BenefitRuleRecord, LayerRecord,
        RegionStatusRecord, FilingRequest,
    )
    missing = sorted(
        f"{model.__name__}.{name}" for model in models for name in model.model_fields if name not in documented
    )
    missing += sorted(f"section {s}" for s in SECTIONS if s not in documented)
    assert missing == [], f"docs/reference-data.md does not document {missing}: add them by hand"


def test_every_json_example_of_the_reference_data_guide_is_a_data_file_the_loader_accepts():
    blocks = re.findall(r"```json\n(.*?)```", Path(REFERENCE_DATA_MD).read_text(), flags=re.DOTALL)
    assert blocks, "docs/reference-data.md has no JSON examples"
    for block in blocks:
        validate(json.loads(block))  # raises DataFileError with the reasons


RUNBOOK_MD = ROOT / "docs" / "runbook.md"


def _runbook_settings() -> dict[str, str]:
    """The runbook's configuration table: each variable named in a row's first column, with the
    row's default column as written."""
    rows: dict[str, str] = {}
    for line in Path(RUNBOOK_MD).read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("`YIDI_"):
            for name in re.findall(r"`YIDI_([A-Z_]+)`", cells[0]):
                assert name.lower() not in rows, f"YIDI_{name} has two rows in the runbook's configuration table"
                rows[name.lower()] = cells[1]
    return rows


def test_the_runbook_documents_every_setting_with_its_default():
    from pydantic import TypeAdapter

    from yidi.platform.settings import Settings

    documented = _runbook_settings()
    assert set(Settings.model_fields) <= set(documented), set(Settings.model_fields) - set(documented)
    # Only settings the code reads: YIDI_CRASH_AT is the failpoint's own (yidi.platform.faults).
    assert set(documented) - set(Settings.model_fields) <= {"crash_at"}, set(documented) - set(Settings.model_fields)
    checked = 0
    for name, field in Settings.model_fields.items():
        written = re.fullmatch(r"`([^`]*)`", documented[name])
        if written is None:  # "host name", "9101–9104 by service": said in words
            continue
        value = written.group(1)
        adapter = TypeAdapter(field.annotation)
        try:
            parsed = adapter.validate_json(value)
        except ValueError:
            parsed = adapter.validate_python("" if value == '""' else value)
        assert parsed == field.get_default(call_default_factory=True), (name, value)
        checked += 1
    assert checked >= 20
