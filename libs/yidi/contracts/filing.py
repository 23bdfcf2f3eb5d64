"""Filing requests, results and events (filing.requests / filing.results / filing.events)."""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import Field

from yidi.contracts.common import AreaCode, Code, StrictWireModel, WireModel
from yidi.domain.codes import FilingCategory, InsuranceType
from yidi.domain.eligibility import Filing, FilingStatus


class FilingAction(StrEnum):
    ADD = "add"
    CHANGE = "change"
    CANCEL = "cancel"


class DeclarationSource(StrEnum):
    SELF_SERVICE = "self_service"  # R21: takes effect at once
    OFFICE = "office"
    IMPORT = "import"  # bulk load of filings made elsewhere, already approved


class FilingRequest(StrictWireModel):
    """Add, change or cancel a filing (key = ``psn_no``)."""

    action: FilingAction
    reqid: Code = Field(description="the sender's id of this request, the idempotency key")
    filing_id: Code | None = Field(default=None, description="required for change and cancel")
    psn_no: Code
    insutype: InsuranceType
    insuplc_admdvs: AreaCode
    filed_admdvs: AreaCode
    category: FilingCategory
    begndate: date
    enddate: date | None = None
    decl_source: DeclarationSource = DeclarationSource.SELF_SERVICE
    reply_to: str = "filing.results"


class FilingRecord(WireModel):
    filing_id: str
    psn_no: str
    insutype: InsuranceType
    insuplc_admdvs: str
    filed_admdvs: str
    category: FilingCategory
    begndate: date
    enddate: date | None
    status: FilingStatus
    version: int

    def to_domain(self) -> Filing:
        return Filing(
            filing_id=self.filing_id,
            psn_no=self.psn_no,
            insutype=self.insutype,
            insured_region=self.insuplc_admdvs,
            filed_region=self.filed_admdvs,
            category=self.category,
            begin=self.begndate,
            end=self.enddate,
            status=self.status,
        )


class FilingResult(WireModel):
    reqid: str
    accepted: bool
    reason: str = ""
    filing: FilingRecord | None = None


class FilingEvent(WireModel):
    """A filing changed (key = ``psn_no``): eligibility refreshes its mirror and cache."""

    event: str = Field(description="filed, changed, cancelled, approved, refused")
    filing: FilingRecord
