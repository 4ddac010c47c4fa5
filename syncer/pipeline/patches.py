"""OR04 patches: merge several queued patches of one order, and validate before sending.

The field tree, types, enums and rules are OR04's (PUT /api/orders). A patch
that breaks a rule is refused here with the reason, and nothing is sent for it.
Every function here is safe on any decoded JSON value: `check_shape` refuses
what is not an object or is nested deeper than OR04's tree could be, before
anything recursive looks at it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from syncer.dates import parse_instant

COUNTRY_CODES = frozenset(
    [
        "AFG",
        "ALA",
        "ALB",
        "DZA",
        "ASM",
        "AND",
        "AGO",
        "AIA",
        "ATA",
        "ATG",
        "ARG",
        "ARM",
        "ABW",
        "AUS",
        "AUT",
        "AZE",
        "BHS",
        "BHR",
        "BGD",
        "BRB",
        "BLR",
        "BEL",
        "BLZ",
        "BEN",
        "BMU",
        "BTN",
        "BOL",
        "BES",
        "BIH",
        "BWA",
        "BVT",
        "BRA",
        "IOT",
        "BRN",
        "BGR",
        "BFA",
        "BDI",
        "KHM",
        "CMR",
        "CAN",
        "CPV",
        "CYM",
        "CAF",
        "TCD",
        "CHL",
        "CHN",
        "CXR",
        "CCK",
        "COL",
        "COM",
        "COG",
        "COD",
        "COK",
        "CRI",
        "CIV",
        "HRV",
        "CUB",
        "CUW",
        "CYP",
        "CZE",
        "DNK",
        "DJI",
        "DMA",
        "DOM",
        "ECU",
        "EGY",
        "SLV",
        "GNQ",
        "ERI",
        "EST",
        "ETH",
        "FLK",
        "FRO",
        "FJI",
        "FIN",
        "FRA",
        "GUF",
        "PYF",
        "ATF",
        "GAB",
        "GMB",
        "GEO",
        "DEU",
        "GHA",
        "GIB",
        "GRC",
        "GRL",
        "GRD",
        "GLP",
        "GUM",
        "GTM",
        "GGY",
        "GIN",
        "GNB",
        "GUY",
        "HTI",
        "HMD",
        "VAT",
        "HND",
        "HKG",
        "HUN",
        "ISL",
        "IND",
        "IDN",
        "IRQ",
        "IRL",
        "IMN",
        "ISR",
        "ITA",
        "JAM",
        "JPN",
        "JEY",
        "JOR",
        "KAZ",
        "KEN",
        "KIR",
        "KOR",
        "KWT",
        "KGZ",
        "LAO",
        "LVA",
        "LBN",
        "LSO",
        "LBR",
        "LBY",
        "LIE",
        "LTU",
        "LUX",
        "MAC",
        "MKD",
        "MDG",
        "MWI",
        "MYS",
        "MDV",
        "MLI",
        "MLT",
        "MHL",
        "MTQ",
        "MRT",
        "MUS",
        "MYT",
        "MEX",
        "FSM",
        "MDA",
        "MCO",
        "MNG",
        "MNE",
        "MSR",
        "MAR",
        "MOZ",
        "MMR",
        "NAM",
        "NRU",
        "NPL",
        "NLD",
        "NCL",
        "NZL",
        "NIC",
        "NER",
        "NGA",
        "NIU",
        "NFK",
        "MNP",
        "NOR",
        "OMN",
        "PAK",
        "PLW",
        "PSE",
        "PAN",
        "PNG",
        "PRY",
        "PER",
        "PHL",
        "PCN",
        "POL",
        "PRT",
        "PRI",
        "QAT",
        "REU",
        "ROU",
        "RUS",
        "RWA",
        "BLM",
        "SHN",
        "KNA",
        "LCA",
        "MAF",
        "SPM",
        "VCT",
        "WSM",
        "SMR",
        "STP",
        "SAU",
        "SEN",
        "SRB",
        "SYC",
        "SLE",
        "SGP",
        "SXM",
        "SVK",
        "SVN",
        "SLB",
        "SOM",
        "ZAF",
        "SGS",
        "SSD",
        "ESP",
        "LKA",
        "SUR",
        "SJM",
        "SWZ",
        "SWE",
        "CHE",
        "TWN",
        "TJK",
        "TZA",
        "THA",
        "TLS",
        "TGO",
        "TKL",
        "TON",
        "TTO",
        "TUN",
        "TUR",
        "TKM",
        "TCA",
        "TUV",
        "UGA",
        "UKR",
        "ARE",
        "GBR",
        "USA",
        "UMI",
        "URY",
        "UZB",
        "VUT",
        "VEN",
        "VNM",
        "VGB",
        "VIR",
        "WLF",
        "YEM",
        "ZMB",
        "ZWE",
    ]
)

# A leaf is a type name, a set of allowed strings, or a nested dict; "[...]" marks an array of objects.
_ADDRESS = {
    "city": "string", "civility": "string", "company": "string", "company_2": "string",
    "country": "string", "country_iso_code": COUNTRY_CODES, "firstname": "string",
    "lastname": "string", "phone": "string", "phone_secondary": "string", "state": "string",
    "street_1": "string", "street_2": "string", "zip_code": "string",
}  # fmt: skip
OR04_FIELDS: dict[str, Any] = {
    "order_id": "string",
    "customer": {
        "accounting_contact": {"customer_id": "string"},
        "delivery_contact": {"customer_id": "string"},
        "billing_address": _ADDRESS,
        "organization": {
            "address": {"country_iso_code": COUNTRY_CODES, "zip_code": "string"},
            "identification_number": "string",
            "name": "string",
            "tax_identification_number": "string",
        },
        "shipping_address": {"additional_info": "string", "internal_additional_info": "string"},
    },
    "invoice_details": {
        "document_details": [{"format": frozenset({"PDF", "cXML"})}],
        "payment_terms": {"days": "integer", "type": frozenset({"END_OF_MONTH", "NET"})},
    },
    "payment_destination": {"@type": "string", "payment_reference": "string"},
    "payment_workflow": frozenset({"PAY_ON_ACCEPTANCE"}),
    "references": {
        "order_reference_for_customer": "string",
        "order_reference_for_seller": "string",
    },
    "shipping_deadline": "date",
    "shop_statistics": {"excluded": "boolean", "reason": "string"},
}
# Fields that may not be null, and must be present whenever their parent object is sent.
REQUIRED = {
    "customer.organization.address.zip_code",
    "payment_destination.@type",
    "shop_statistics.excluded",
}
NOT_BLANK = {"references.order_reference_for_customer", "references.order_reference_for_seller"}
MAX_LENGTH = {"shop_statistics.reason": 100}
# OR04's deepest field is 4 levels down (invoice_details.document_details[].format); anything
# much deeper is refused before the (recursive) merge and validation see it.
MAX_DEPTH = 16


@dataclass(frozen=True)
class PatchError:
    code: str
    field: str
    message: str

    def as_json(self) -> dict[str, str]:
        return {"code": self.code, "field": self.field, "message": self.message}


def nesting_depth(value: object, *, stop_after: int = MAX_DEPTH) -> int:
    """Levels of nested objects and arrays ({} is 1, a scalar 0); counting stops past stop_after.

    Iterative, so a patch nested thousands of levels deep cannot exhaust the stack.
    """
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Iterable[object] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > stop_after:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_shape(patch: object) -> list[PatchError]:
    """What makes a decoded patch unusable as a whole: not an object, or nested too deep."""
    if not isinstance(patch, dict):
        kind = "an array" if isinstance(patch, list) else f"a JSON {_json_kind(patch)}"
        return [PatchError("INVALID_TYPE", "", f"the patch must be a JSON object, not {kind}")]
    depth = nesting_depth(patch)
    if depth > MAX_DEPTH:
        return [
            PatchError("TOO_DEEP", "", f"the patch is nested more than {MAX_DEPTH} levels deep")
        ]
    return []


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return "string" if isinstance(value, str) else type(value).__name__


def merge_patches(patches: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge in order: later fields win; nested objects merge field by field; null is a value."""
    merged: dict[str, Any] = {}
    for patch in patches:
        _merge_into(merged, patch)
    return merged


def _merge_into(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        elif isinstance(value, Mapping):
            target[key] = {}
            _merge_into(target[key], value)
        else:
            target[key] = value


def validate_patch(
    order_id: str, patch: object, *, current_payment_workflow: str | None = None
) -> list[PatchError]:
    """Every rule the patch breaks; empty when OR04 should accept it."""
    shape = check_shape(patch)
    if shape or not isinstance(patch, dict):
        return shape
    errors: list[PatchError] = []
    if "order_id" in patch and patch["order_id"] != order_id:
        errors.append(
            PatchError(
                "ORDER_ID_MISMATCH",
                "order_id",
                f"patch is for {patch['order_id']!r}, row is for {order_id!r}",
            )
        )
    if len(patch) == (1 if "order_id" in patch else 0):
        errors.append(PatchError("EMPTY_PATCH", "", "the patch changes nothing"))
    _check_object(patch, OR04_FIELDS, "", errors)
    workflow = patch.get("payment_workflow")
    if workflow is not None and current_payment_workflow not in (None, "PAY_ON_DUE_DATE"):
        errors.append(
            PatchError(
                "INVALID_CHANGE",
                "payment_workflow",
                f"only PAY_ON_DUE_DATE -> PAY_ON_ACCEPTANCE is allowed; the order is {current_payment_workflow}",
            )
        )
    return errors


def _check_object(
    value: dict[str, Any], spec: dict[str, Any], prefix: str, errors: list[PatchError]
) -> None:
    for key, child in value.items():
        path = f"{prefix}{key}"
        if key not in spec:
            errors.append(PatchError("UNKNOWN_FIELD", path, f"{path} is not a field OR04 accepts"))
            continue
        _check_value(child, spec[key], path, errors)
    for required in REQUIRED:
        parent, _, leaf = required.rpartition(".")
        if parent == prefix.rstrip(".") and leaf not in value:
            errors.append(
                PatchError("REQUIRED", required, f"{required} is required when {parent} is sent")
            )


def _check_value(value: Any, spec: Any, path: str, errors: list[PatchError]) -> None:
    if value is None:
        if path in REQUIRED or path == "order_id":
            errors.append(
                PatchError("REQUIRED", path, f"{path} is required and cannot be removed (null)")
            )
        elif path in NOT_BLANK:
            errors.append(PatchError("BLANK", path, f"{path} may not be blank"))
        return
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            errors.append(PatchError("INVALID_TYPE", path, f"{path} must be an object"))
        else:
            _check_object(value, spec, path + ".", errors)
    elif isinstance(spec, list):
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            errors.append(PatchError("INVALID_TYPE", path, f"{path} must be an array of objects"))
        else:
            for index, item in enumerate(value):
                _check_object(item, spec[0], f"{path}[{index}].", errors)
    elif isinstance(spec, frozenset):
        if not isinstance(value, str):
            errors.append(PatchError("INVALID_TYPE", path, f"{path} must be a string"))
        elif value not in spec:
            shown = (
                "an ISO 3166-1 alpha-3 code" if spec is COUNTRY_CODES else " | ".join(sorted(spec))
            )
            errors.append(PatchError("INVALID_VALUE", path, f"{path} {value!r} is not {shown}"))
    else:
        _check_leaf(value, spec, path, errors)


def _check_leaf(value: Any, kind: str, path: str, errors: list[PatchError]) -> None:
    ok = {
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "date": isinstance(value, str),
    }[kind]
    if not ok:
        errors.append(
            PatchError(
                "INVALID_TYPE",
                path,
                f"{path} must be a {kind if kind != 'date' else 'date string'}",
            )
        )
        return
    if kind == "date":
        try:
            parse_instant(value)
        except ValueError:
            errors.append(
                PatchError("INVALID_VALUE", path, f"{path} {value!r} is not an ISO-8601 date")
            )
    if path in NOT_BLANK and not value.strip():
        errors.append(PatchError("BLANK", path, f"{path} may not be blank"))
    limit = MAX_LENGTH.get(path)
    if limit is not None and len(value) > limit:
        errors.append(
            PatchError("TOO_LONG", path, f"{path} is {len(value)} characters; at most {limit}")
        )
