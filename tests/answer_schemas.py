"""Answers checked against the published schemas (docs/schemas): the e2e clients run every answer
they read through ``AnswerSchemas`` (tests/e2e/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema

from yidi.contracts.schemas import OTHER_OUTPUTS, SETTLEMENT_INFNOS

SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"


def validator(name: str) -> jsonschema.Draft202012Validator:
    """The published schema ``docs/schemas/<name>.json``, ready to check a message against."""
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


class AnswerSchemas:
    """Every answer a test's client reads, checked against the published schemas (docs/schemas,
    the serialization form: every field there is required): what a gateway that generated its
    client from the schemas would reject is a failure of the test that met it, whatever the test
    itself asserts. On a gateway's reply topic a success's ``output`` is checked against its
    infno's model (``SettlementOutput``, ``schemas.OTHER_OUTPUTS``) and a failure's must be ``{}``."""

    def __init__(self, envelope: str) -> None:
        self._envelope = self._validator(envelope)
        self._outputs: dict[str, list[jsonschema.Draft202012Validator]] = {}
        if envelope == "ResponseEnvelope":
            settlement = [self._validator("SettlementOutput")]
            self._outputs = {i.value: settlement for i in SETTLEMENT_INFNOS}
            for infno, models in OTHER_OUTPUTS.items():
                self._outputs[infno] = [self._validator(m) for m in models]
        self.problems: list[str] = []

    @staticmethod
    def _validator(name: str) -> jsonschema.Draft202012Validator:
        return validator(name)

    def _errors(self, validator: jsonschema.Draft202012Validator, value: Any) -> list[str]:
        return [f"{validator.schema['$id']} at {'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:300]}"
                for e in validator.iter_errors(value)]

    def __call__(self, answer: dict[str, Any], _timestamp: int) -> None:
        found = self._errors(self._envelope, answer)
        if self._outputs and not found:
            output, infno = answer["output"], answer["infno"]
            if answer["infcode"] != 0:
                if output != {}:
                    found.append(f"a failure's output is {{}}, not {str(output)[:200]}")
            elif infno not in self._outputs:
                found.append(f"a success of infno {infno!r}, which has no output schema")
            else:
                each = [self._errors(v, output) for v in self._outputs[infno]]
                if all(each):  # none of the infno's models takes it
                    found += [e for errors in each for e in errors]
        if found:
            self.problems.append(f"answer to {answer.get('msgid') or answer.get('reqid')!r}: " + "; ".join(found))

    def check(self) -> None:
        assert not self.problems, "answers that do not match their published schema:\n" + "\n".join(self.problems[:20])
