"""Seeded generator of realistic Mirakl orders (the OR11/OR15 order object).

Shapes follow what real Mirakl sends (docs/mirakl.md): order and line `created_date` /
`last_updated_date` in whole seconds, other dates with milliseconds; `null` where Mirakl
sends null (channel, addresses before acceptance, delivery_date, order_refunds,
order_taxes); refunds with `refund_state`; line ids of several forms; operator-only
fields (shop_id, shop_name, customer.email...) only in the operator's view; amounts
printed with two decimals and rates with four when serialised with `dumps`.
"""

from __future__ import annotations

import copy
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

STATES = ["WAITING_ACCEPTANCE", "SHIPPING", "SHIPPED", "RECEIVED", "CLOSED", "CANCELED", "REFUSED"]
LINE_STATES = {"CANCELED": "CANCELED", "REFUSED": "REFUSED"}
CURRENCIES = ["EUR", "EUR", "EUR", "GBP", "USD"]
CITIES = [
    ("Paris", "75011", "FRA"),
    ("Lyon", "69003", "FRA"),
    ("Berlin", "10115", "DEU"),
    ("London", "SW1A 1AA", "GBR"),
    ("Madrid", "28013", "ESP"),
    ("Milano", "20121", "ITA"),
]
FIRST = ["Alice", "Bruno", "Chloé", "Dmitri", "Eva", "Farid", "Greta", "Hugo", "Inès", "Jonas"]
LAST = ["Martin", "Dubois", "Schmidt", "O'Brien", "García", "Rossi", "Nguyen", "Müller"]
PRODUCTS = [
    ("Chaise en chêne massif", "FURN-CHAIR"),
    ("Lampe de bureau LED", "LIGHT-DESK"),
    ("Casque audio sans fil", "AUDIO-HP"),
    ("Tapis berbère 160x230", "RUG-BERB"),
    ("Cafetière italienne 6 tasses", "KITCH-MOKA"),
    ('Sac à dos "urbain" 20L', "BAG-URB"),
]


REFUND_STATES = ["WAITING_REFUND_TAX_CONFIRMATION", "WAITING_REFUND", "WAITING_REFUND_PAYMENT"]
# The deprecated refund `state` "will not contain newer states": the tax-confirmation
# step is reported there as plain WAITING_REFUND (our reading; see docs/mirakl.md).
DEPRECATED_REFUND_STATE = {"WAITING_REFUND_TAX_CONFIRMATION": "WAITING_REFUND"}
BEFORE_ACCEPTANCE = ("WAITING_ACCEPTANCE", "REFUSED")


def iso(moment: datetime) -> str:
    """A date as request bodies carry it: UTC, `Z`, milliseconds dropped when zero."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    ms = moment.microsecond // 1000
    return f"{text}.{ms:03d}Z" if ms else f"{text}Z"


def iso_seconds(moment: datetime) -> str:
    """`created_date`/`last_updated_date` of orders and lines: whole seconds, `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_millis(moment: datetime) -> str:
    """Every other date: always three digits of milliseconds (`.000Z` included)."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d}Z"


class Amount(float):
    """A money amount; `dumps` prints it with two decimals (`20.00`), as Mirakl does."""

    __slots__ = ()


class Rate(float):
    """A tax or commission rate; `dumps` prints it with four decimals (`20.0000`)."""

    __slots__ = ()


def _printed(value: object) -> orjson.Fragment:
    if isinstance(value, Rate):
        return orjson.Fragment(b"%.4f" % value)
    if isinstance(value, Amount):
        return orjson.Fragment(b"%.2f" % value)
    raise TypeError(f"not serialisable: {type(value).__name__}")


def dumps(document: object) -> bytes:
    """JSON of an order (or any document holding Amount/Rate) as Mirakl prints it."""
    return orjson.dumps(document, default=_printed)


def money(cents: int) -> Amount:
    """A decimal amount as JSON number: prints `20.00` through `dumps`, equals 20.0."""
    return Amount(round(cents / 100, 2))


def rate(percent: float) -> Rate:
    return Rate(percent)


def _line_id(rng: random.Random, order_id: str, number: int, index: int) -> str:
    """Mostly `<order_id>-<n>`, sometimes a number or a UUID: all unique in the simulator."""
    form = rng.random()
    if form < 0.15:
        return str(number * 8 + index)
    if form < 0.25:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return f"{order_id}-{index}"


def _tax(cents: int, code: str = "TVA-20", percent: float = 20.0) -> dict[str, Any]:
    return {
        "amount": money(cents),
        "code": code,
        "rate": rate(percent),
        "tax_calculation_rule": "PROPORTIONAL_TO_AMOUNT",
    }


def _address(rng: random.Random, first: str, last: str) -> dict[str, Any]:
    city, zip_code, country = rng.choice(CITIES)
    return {
        "city": city,
        "civility": rng.choice(["M", "Mme", None]),
        "company": None,
        "country": {
            "FRA": "France",
            "DEU": "Germany",
            "GBR": "United Kingdom",
            "ESP": "Spain",
            "ITA": "Italy",
        }[country],
        "country_iso_code": country,
        "firstname": first,
        "lastname": last,
        "phone": f"+33 6 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} 00",
        "state": None,
        "street_1": f"{rng.randint(1, 200)} rue de la République",
        "street_2": rng.choice([None, "Bâtiment B", "3e étage"]),
        "zip_code": zip_code,
    }


def _refunds(
    rng: random.Random, state: str, order_id: str, index: int, unit: int, created: datetime
) -> list[dict[str, Any]]:
    if state not in ("RECEIVED", "CLOSED") or rng.random() > 0.15:
        return []
    refund_state = "REFUNDED" if rng.random() < 0.6 else rng.choice(REFUND_STATES)
    commission = unit * 12 // 100
    return [
        {
            "id": f"R-{order_id}-{index}",
            "order_refund_id": f"OR-{order_id}-{index}",
            "amount": money(unit),
            "quantity": 1,
            "reason_code": rng.choice(["DAMAGED", "NOT_AS_DESCRIBED", "LATE"]),
            "refund_state": refund_state,
            "state": DEPRECATED_REFUND_STATE.get(refund_state, refund_state),
            "created_date": iso_millis(created + timedelta(days=9)),
            "shipping_amount": money(0),
            "commission_amount": money(commission),
            "commission_tax_amount": money(commission * 20 // 100),
            "commission_taxes": [_tax(commission * 20 // 100)],
            "commission_total_amount": money(commission + commission * 20 // 100),
            "taxes": [_tax(unit * 20 // 120)],
            "shipping_taxes": [],
            "transaction_date": iso_millis(created + timedelta(days=10))
            if refund_state == "REFUNDED"
            else None,
        }
    ]


def _cancelations(
    state: str, order_id: str, index: int, unit: int, qty: int, created: datetime
) -> list[dict[str, Any]]:
    if state != "CANCELED":
        return []
    commission = unit * qty * 12 // 100
    return [
        {
            "id": f"C-{order_id}-{index}",
            "amount": money(unit * qty),
            "quantity": qty,
            "reason_code": "SHOP_CANCELED",
            "created_date": iso_millis(created + timedelta(hours=5)),
            "shipping_amount": money(0),
            "shipping_taxes": [],
            "taxes": [_tax(unit * qty * 20 // 120)],
            "fees": [{"amount": money(0), "code": "CANCEL-FEE"}],
            "commission_amount": money(commission),
            "commission_taxes": [_tax(commission * 20 // 100)],
            "commission_total_amount": money(commission + commission * 20 // 100),
        }
    ]


def make_order(
    rng: random.Random,
    number: int,
    created: datetime,
    shop_id: int = 2001,
    *,
    operator: bool = True,
) -> dict[str, Any]:
    """One order in the shape OR15 serves, ~3-4 KB, 1-5 lines.

    `operator`: the operator's view (shop_id, shop_name, customer.email and the other
    operator-only fields); False gives a seller's view, which has none of them.
    """
    first, last = rng.choice(FIRST), rng.choice(LAST)
    state = rng.choice(STATES)
    currency = rng.choice(CURRENCIES)
    order_id = f"Order_{number:08d}-A"
    stamp = iso_seconds(created)
    lines = []
    price_total = shipping_total = commission_total = 0
    # 1-5 lines, most orders small (about 2 lines on average), as marketplaces see them.
    line_count = rng.choices((1, 2, 3, 4, 5), weights=(45, 25, 15, 10, 5))[0]
    for index in range(1, line_count + 1):
        title, sku = rng.choice(PRODUCTS)
        qty = rng.randint(1, 4)
        unit = rng.randint(199, 49999)
        ship = rng.choice([0, 490, 990])
        commission = unit * qty * 12 // 100
        price_total += unit * qty
        shipping_total += ship
        commission_total += commission
        additional: list[dict[str, Any]] = [
            {"code": "gift-wrap", "type": "BOOLEAN", "value": rng.choice(["true", "false"])}
        ]
        if rng.random() < 0.3:
            colours = rng.sample(["red", "blue", "green", "oak"], rng.randint(1, 3))
            additional.append({"code": "colours", "type": "MULTIPLE_VALUES_LIST", "value": colours})
        line: dict[str, Any] = {
            "order_line_id": _line_id(rng, order_id, number, index),
            "order_line_index": index,
            "order_line_state": LINE_STATES.get(state, state),
            "order_line_state_reason_code": None,
            "created_date": stamp,
            "last_updated_date": stamp,
            "shipped_date": None,
            "received_date": None,
            "debited_date": iso_millis(created + timedelta(hours=3)),
            "offer_id": 1000 + rng.randint(1, 99999),
            "offer_sku": f"{sku}-{rng.randint(100, 999)}",
            "offer_state_code": "11",
            "product_sku": f"{sku}-P",
            "product_shop_sku": f"{sku}-SHOP",
            "product_title": title,
            "description": title,
            "product_medias": [
                {
                    "media_url": f"/media/product/{sku.lower()}.jpg",
                    "mime_type": "image/jpeg",
                    "type": "SMALL",
                }
            ],
            "category_code": sku.split("-")[0].lower(),
            "category_label": sku.split("-")[0].title(),
            "quantity": qty,
            "price_unit": money(unit),
            "price": money(unit * qty),
            "shipping_price": money(ship),
            "total_price": money(unit * qty + ship),
            "commission_fee": money(commission),
            "commission_vat": money(commission * 20 // 100),
            "commission_rate_vat": rate(20),
            "commission_taxes": [_tax(commission * 20 // 100)],
            "total_commission": money(commission + commission * 20 // 100),
            "taxes": [_tax(unit * qty * 20 // 120)],
            "shipping_taxes": [_tax(ship * 20 // 120)],
            "fees": [],
            "refunds": _refunds(rng, state, order_id, index, unit, created),
            "cancelations": _cancelations(state, order_id, index, unit, qty, created),
            "promotions": [],
            "order_line_additional_fields": additional,
            "can_refund": state in ("SHIPPED", "RECEIVED"),
            "price_additional_info": None,
            "shipping_from": None,
        }
        if operator:
            line["can_open_incident"] = state in ("SHIPPED", "RECEIVED")
        lines.append(line)
    channel = rng.choice([{"code": "WEB", "label": "Web"}, {"code": "APP", "label": "App"}, None])
    accepted = state not in BEFORE_ACCEPTANCE
    customer: dict[str, Any] = {
        "customer_id": f"cust-{rng.randint(1, 50000)}",
        "firstname": first,
        "lastname": last,
        "civility": rng.choice(["M", "Mme", None]),
        "locale": rng.choice(["fr_FR", "de_DE", "en_GB", None]),
        # Null until the order is accepted, as Mirakl sends them.
        "billing_address": _address(rng, first, last) if accepted else None,
        "shipping_address": _address(rng, first, last) if accepted else None,
        "organization": None,
    }
    if operator:
        customer["email"] = f"{first.lower()}.{rng.randint(1, 999)}@example.org"
    order: dict[str, Any] = {
        "order_id": order_id,
        "commercial_id": f"Order_{number:08d}",
        "channel": channel,
        "created_date": stamp,
        "last_updated_date": stamp,
        "acceptance_decision_date": iso_millis(created + timedelta(hours=2)) if accepted else None,
        "customer_debited_date": iso_millis(created + timedelta(hours=3)) if accepted else None,
        "shipping_deadline": iso_millis(
            (created + timedelta(days=3)).replace(hour=23, minute=59, second=59, microsecond=999000)
        ),
        "transaction_date": iso_millis(created.replace(microsecond=0)),
        "order_state": state,
        "order_state_reason_code": None,
        "order_state_reason_label": None,
        "can_cancel": state == "WAITING_ACCEPTANCE",
        "can_shop_ship": state == "SHIPPING",
        "has_incident": rng.random() < 0.03,
        "has_invoice": state in ("SHIPPED", "RECEIVED", "CLOSED"),
        "has_customer_message": rng.random() < 0.1,
        "fully_refunded": False,
        "currency_iso_code": currency,
        "order_tax_mode": "TAX_INCLUDED",
        "price": money(price_total),
        "shipping_price": money(shipping_total),
        "total_price": money(price_total + shipping_total),
        "total_commission": money(commission_total),
        "order_taxes": rng.choice([None, []]),
        "order_refunds": rng.choice([None, []]),
        "promotions": {"applied_promotions": [], "total_deduced_amount": money(0)},
        "fulfillment": {"center": {"code": "DEFAULT"}},
        "customer": customer,
        "customer_notification_email": f"{number:x}-{rng.getrandbits(32):08x}@notify.example",
        "shipping_type_code": rng.choice(["STD", "EXP"]),
        "shipping_type_label": "Standard",
        "shipping_zone_code": "FR-METRO",
        "shipping_zone_label": "France métropolitaine",
        "shipping_carrier_code": rng.choice(["COLISSIMO", "DHL", None]),
        "shipping_company": None,
        "shipping_tracking": None,
        "shipping_tracking_url": None,
        "payment_type": rng.choice(["CB", "PAYPAL"]),
        "payment_workflow": "PAY_ON_ACCEPTANCE",
        "references": {
            "order_reference_for_customer": None,
            "order_reference_for_seller": f"S-{number}",
        },
        "order_additional_fields": [
            {"code": "loyalty-id", "type": "STRING", "value": f"L{rng.randint(1, 99999)}"}
        ],
        "invoice_details": None,
        "delivery_date": None
        if rng.random() < 0.3
        else {
            "earliest": iso_millis(created + timedelta(days=2)),
            "latest": iso_millis(created + timedelta(days=5)),
        },
        "quote_id": None,
        "leadtime_to_ship": 2,
        "paymentType": "CB",
        "order_lines": lines,
    }
    if operator:
        order.update(
            shop_id=shop_id,
            shop_name="Maison Exemple",
            can_evaluate=state in ("RECEIVED", "CLOSED"),
            commissionable=True,
            payment_destination="OPERATOR",
            waiting_funding_confirmation=False,
            waiting_tax_confirmation=False,
        )
    if rng.random() < 0.2:
        # Fields appear over time: the worker must keep what it does not know.
        order["x_marketplace_future_field"] = {"introduced": "2026-10", "score": rng.randint(1, 9)}
    return order


def touch_order(rng: random.Random, order: dict[str, Any], moment: datetime) -> None:
    """An update as Mirakl would record it: a state change, lines changed, new last_updated_date
    (whole seconds: two updates within a second carry the same date)."""
    order["order_state"] = rng.choice(STATES)
    order["last_updated_date"] = iso_seconds(moment)
    order["has_incident"] = not order["has_incident"]
    customer = order["customer"]
    if order["order_state"] not in BEFORE_ACCEPTANCE and customer.get("billing_address") is None:
        customer["billing_address"] = _address(rng, customer["firstname"], customer["lastname"])
        customer["shipping_address"] = _address(rng, customer["firstname"], customer["lastname"])
    lines = order["order_lines"]
    if len(lines) > 1 and rng.random() < 0.3:
        lines.pop()  # a line removed (e.g. refused and dropped)
    for line in lines:
        line["order_line_state"] = order["order_state"]
        line["last_updated_date"] = iso_seconds(moment)
        line["quantity"] = max(1, line["quantity"] + rng.choice([-1, 0, 1]))
        unit_cents = round(line["price_unit"] * 100)
        line["price"] = money(unit_cents * line["quantity"])
        line["total_price"] = money(
            unit_cents * line["quantity"] + round(line["shipping_price"] * 100)
        )
    order["price"] = money(sum(round(line["price"] * 100) for line in lines))
    order["total_price"] = money(round(order["price"] * 100) + round(order["shipping_price"] * 100))


def edit_order(
    rng: random.Random, order: dict[str, Any], moment: datetime, *, line_change: bool
) -> None:
    """A small update, for measuring what a store rewrites: the order's state moves to another
    one (and last_updated_date to `moment`); with `line_change`, one line is added (a copy of
    the last with a new id, created now) or the last one removed (when there are two or more).
    Every other line, and every amount, is left exactly as it was (unlike `touch_order`)."""
    order["order_state"] = rng.choice([s for s in STATES if s != order["order_state"]])
    order["last_updated_date"] = iso_seconds(moment)
    if not line_change:
        return
    lines = order["order_lines"]
    if len(lines) > 1 and rng.random() < 0.5:
        lines.pop()
        return
    added = copy.deepcopy(lines[-1])  # amounts keep their type: printed as Mirakl does
    added.update(
        order_line_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),  # never reused
        order_line_index=max(line["order_line_index"] for line in lines) + 1,
        created_date=iso_seconds(moment),
        last_updated_date=iso_seconds(moment),
    )
    lines.append(added)
