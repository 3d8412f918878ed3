"""CSV import of customers' phone numbers, with E.164 normalisation and a per-row error report.

Columns (header row required, any order, case-insensitive): ``phone`` (required), ``label``, and the customer:
``customer_id`` or ``account_number``. A row with an unknown ``account_number`` and ``first_name`` +
``last_name`` creates the customer (``segment``: retail/business/critical, ``language``: it/en). Numbers
without ``+`` are read in ``region`` (the ``region`` column or the request's default, IT).

Good rows are applied and bad rows reported (row number as the spreadsheet shows it, column, reason); with
``dry_run`` nothing is written. A number already on the same customer is ``unchanged``; one that belongs to
another customer is an error (moving numbers between customers is deliberate work, not an import side effect).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import models as m

MAX_ROWS = 50_000
MAX_ERRORS = 500
KNOWN = {"phone", "label", "customer_id", "account_number", "first_name", "last_name", "segment", "language",
         "region"}


class ImportFormatError(ValueError):
    """The file itself cannot be imported (no header, no phone column, not text)."""


def normalise_phone(raw: str, region: str = "IT") -> str:
    """E.164 form of ``raw``; ValueError with a reason a person can act on."""
    text = (raw or "").strip()
    if not text:
        raise ValueError("the phone number is empty")
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else (region or "IT").upper())
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number ({exc}); write it as +39 333 1234567 or in the row's region") \
            from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("not a valid number for its country (check the digits or the region)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


@dataclass
class ImportReport:
    rows: int = 0
    added: int = 0
    unchanged: int = 0
    customers_created: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False

    def error(self, row: int, column: str, value: str, reason: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"row": row, "column": column, "value": value[:64], "error": reason})

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "added": self.added, "unchanged": self.unchanged,
                "customers_created": self.customers_created, "failed": len({e["row"] for e in self.errors}),
                "errors": self.errors, "dry_run": self.dry_run}


def read_rows(data: bytes) -> list[tuple[int, dict[str, str]]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ImportFormatError("the file is not UTF-8 text: save the spreadsheet as CSV UTF-8") from None
    sample = text[:4096]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ImportFormatError("the file is empty: the first row must name the columns") from None
    if "phone" not in header:
        raise ImportFormatError(f"no 'phone' column in the header {header}; expected columns: {sorted(KNOWN)}")
    if not {"customer_id", "account_number"} & set(header):
        raise ImportFormatError("the header needs a 'customer_id' or an 'account_number' column")
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        if len(rows) >= MAX_ROWS:
            raise ImportFormatError(f"more than {MAX_ROWS} rows: split the file")
        rows.append((reader.line_num, {h: (values[i].strip() if i < len(values) else "")
                                       for i, h in enumerate(header) if h in KNOWN}))
    return rows


def import_phones(s: Session, rows: list[tuple[int, dict[str, str]]], *, region: str = "IT",
                  dry_run: bool = False) -> ImportReport:
    """Apply the rows in the session's transaction (the caller commits, or rolls back for ``dry_run``)."""
    report = ImportReport(rows=len(rows), dry_run=dry_run)
    seen: dict[str, int] = {}
    created: dict[str, m.Customer] = {}
    for line, row in rows:
        try:
            e164 = normalise_phone(row.get("phone", ""), row.get("region") or region)
        except ValueError as exc:
            report.error(line, "phone", row.get("phone", ""), str(exc))
            continue
        if e164 in seen:
            report.error(line, "phone", e164, f"the same number is already on row {seen[e164]}")
            continue
        customer = _customer(s, row, line, report, created)
        if customer is None:
            continue
        seen[e164] = line
        existing = s.scalars(select(m.PhoneNumber).where(m.PhoneNumber.e164 == e164)).first()
        if existing is not None:
            if existing.customer_id == customer.id:
                report.unchanged += 1
            else:
                report.error(line, "phone", e164, f"already belongs to customer {existing.customer_id}")
            continue
        label = row.get("label") or None
        s.add(m.PhoneNumber(e164=e164, customer_id=customer.id, label=label[:50] if label else None,
                            verified=False))
        s.flush()
        report.added += 1
    return report


def _customer(s: Session, row: dict[str, str], line: int, report: ImportReport,
              created: dict[str, m.Customer]) -> m.Customer | None:
    cid = row.get("customer_id", "")
    if cid:
        if not cid.isdigit():
            report.error(line, "customer_id", cid, "customer_id must be a number")
            return None
        customer = s.get(m.Customer, int(cid))
        if customer is None:
            report.error(line, "customer_id", cid, "no customer with this id")
        return customer
    account = row.get("account_number", "")
    if not account:
        report.error(line, "account_number", "", "give customer_id or account_number")
        return None
    if account in created:
        return created[account]
    customer = s.scalars(select(m.Customer).where(m.Customer.account_number == account)).first()
    if customer is not None:
        return customer
    first, last = row.get("first_name", ""), row.get("last_name", "")
    if not (first and last):
        report.error(line, "account_number", account,
                     "unknown account: add first_name and last_name to create the customer")
        return None
    segment = (row.get("segment") or "retail").lower()
    if segment not in {x.value for x in m.Segment}:
        report.error(line, "segment", segment, "segment must be retail, business or critical")
        return None
    language = (row.get("language") or "it").lower()
    if language not in ("it", "en"):
        report.error(line, "language", language, "language must be it or en")
        return None
    customer = m.Customer(name=f"{first} {last}"[:200], first_name=first[:100], last_name=last[:100],
                          segment=m.Segment(segment), language=language, account_number=account[:64])
    s.add(customer)
    s.flush()
    created[account] = customer
    report.customers_created += 1
    return customer
