"""Seeded generator of realistic Mirakl orders (the OR11/OR15 order object)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

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


def iso(moment: datetime) -> str:
    """Mirakl's date format: UTC, `Z`, milliseconds dropped when zero."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    ms = moment.microsecond // 1000
    return f"{text}.{ms:03d}Z" if ms else f"{text}Z"


def money(cents: int) -> float:
    """A decimal amount as JSON number; two decimals, exact in its shortest repr."""
    return round(cents / 100, 2)


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
    return [
        {
            "id": f"R-{order_id}-{index}",
            "amount": money(unit),
            "quantity": 1,
            "reason_code": rng.choice(["DAMAGED", "NOT_AS_DESCRIBED", "LATE"]),
            "state": "REFUNDED",
            "created_date": iso(created + timedelta(days=9)),
            "shipping_amount": 0,
            "commission_amount": money(unit * 12 // 100),
        }
    ]


def _cancelations(
    state: str, order_id: str, index: int, unit: int, qty: int, created: datetime
) -> list[dict[str, Any]]:
    if state != "CANCELED":
        return []
    return [
        {
            "id": f"C-{order_id}-{index}",
            "amount": money(unit * qty),
            "quantity": qty,
            "reason_code": "SHOP_CANCELED",
            "created_date": iso(created + timedelta(hours=5)),
            "shipping_amount": 0,
            "commission_amount": money(unit * qty * 12 // 100),
        }
    ]


def make_order(
    rng: random.Random, number: int, created: datetime, shop_id: int = 2001
) -> dict[str, Any]:
    """One order in the shape OR15 serves, ~3-4 KB, 1-5 lines."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    state = rng.choice(STATES)
    currency = rng.choice(CURRENCIES)
    order_id = f"Order_{number:08d}-A"
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
        lines.append(
            {
                "order_line_id": f"{order_id}-{index}",
                "order_line_index": index,
                "order_line_state": LINE_STATES.get(state, state),
                "order_line_state_reason_code": None,
                "created_date": iso(created),
                "last_updated_date": iso(created),
                "shipped_date": None,
                "received_date": None,
                "debited_date": iso(created),
                "offer_id": 1000 + rng.randint(1, 99999),
                "offer_sku": f"{sku}-{rng.randint(100, 999)}",
                "offer_state_code": "11",
                "product_sku": f"{sku}-P",
                "product_title": title,
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
                "commission_rate_vat": 20.0,
                "total_commission": money(commission + commission * 20 // 100),
                "taxes": [
                    {"amount": money(unit * qty * 20 // 120), "code": "TVA-20", "rate": 20.0}
                ],
                "shipping_taxes": [
                    {"amount": money(ship * 20 // 120), "code": "TVA-20", "rate": 20.0}
                ],
                "fees": [],
                "refunds": _refunds(rng, state, order_id, index, unit, created),
                "cancelations": _cancelations(state, order_id, index, unit, qty, created),
                "promotions": [],
                "order_line_additional_fields": [
                    {"code": "gift-wrap", "type": "BOOLEAN", "value": rng.choice(["true", "false"])}
                ],
                "can_refund": state in ("SHIPPED", "RECEIVED"),
                "price_additional_info": None,
            }
        )
    order = {
        "order_id": order_id,
        "commercial_id": f"Order_{number:08d}",
        "channel": {"code": rng.choice(["WEB", "APP"]), "label": "Web"},
        "created_date": iso(created),
        "last_updated_date": iso(created),
        "acceptance_decision_date": iso(created + timedelta(hours=2))
        if state != "WAITING_ACCEPTANCE"
        else None,
        "customer_debited_date": iso(created + timedelta(hours=3))
        if state not in ("WAITING_ACCEPTANCE", "REFUSED")
        else None,
        "shipping_deadline": iso(created + timedelta(days=3)),
        "transaction_date": iso(created),
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
        "order_taxes": [],
        "order_refunds": [],
        "promotions": {"applied_promotions": [], "total_deduced_amount": 0},
        "shop_id": shop_id,
        "shop_name": "Maison Exemple",
        "fulfillment": {"center": {"code": "DEFAULT"}},
        "customer": {
            "customer_id": f"cust-{rng.randint(1, 50000)}",
            "firstname": first,
            "lastname": last,
            "civility": rng.choice(["M", "Mme"]),
            "locale": rng.choice(["fr_FR", "de_DE", "en_GB"]),
            "email": f"{first.lower()}.{rng.randint(1, 999)}@example.org",
            "billing_address": _address(rng, first, last),
            "shipping_address": _address(rng, first, last),
            "organization": None,
        },
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
        "delivery_date": {
            "earliest": iso(created + timedelta(days=2)),
            "latest": iso(created + timedelta(days=5)),
        },
        "quote_id": None,
        "leadtime_to_ship": 2,
        "paymentType": "CB",
        "order_lines": lines,
    }
    if rng.random() < 0.2:
        # Fields appear over time: the worker must keep what it does not know.
        order["x_marketplace_future_field"] = {"introduced": "2026-10", "score": rng.randint(1, 9)}
    return order


def touch_order(rng: random.Random, order: dict[str, Any], moment: datetime) -> None:
    """An update as Mirakl would record it: a state change, lines changed, new last_updated_date."""
    order["order_state"] = rng.choice(STATES)
    order["last_updated_date"] = iso(moment)
    order["has_incident"] = not order["has_incident"]
    lines = order["order_lines"]
    if len(lines) > 1 and rng.random() < 0.3:
        lines.pop()  # a line removed (e.g. refused and dropped)
    for line in lines:
        line["order_line_state"] = order["order_state"]
        line["last_updated_date"] = iso(moment)
        line["quantity"] = max(1, line["quantity"] + rng.choice([-1, 0, 1]))
        unit_cents = round(line["price_unit"] * 100)
        line["price"] = money(unit_cents * line["quantity"])
        line["total_price"] = money(
            unit_cents * line["quantity"] + round(line["shipping_price"] * 100)
        )
    order["price"] = money(sum(round(line["price"] * 100) for line in lines))
    order["total_price"] = money(round(order["price"] * 100) + round(order["shipping_price"] * 100))
