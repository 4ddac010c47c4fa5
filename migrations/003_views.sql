-- Warehouse-friendly views over the mirrored tables (see docs/warehouse.md).

-- Each order line with its order's key columns: one row per line, ready to aggregate.
CREATE VIEW order_lines_flat AS
SELECT l.source, l.order_id, o.commercial_id, o.shop_id, o.channel_code, o.currency_iso_code,
       o.order_state, o.created_date AS order_created_date, o.customer_id,
       l.order_line_id, l.order_line_index, l.order_line_state, l.offer_id, l.offer_sku,
       l.product_sku, l.product_title, l.category_code, l.quantity, l.price_unit, l.price,
       l.shipping_price, l.total_price, l.commission_fee, l.total_commission,
       l.created_date, l.last_updated_date, l.shipped_date, l.received_date
FROM order_lines l
JOIN orders o ON o.source = l.source AND o.order_id = l.order_id;

-- Refunds of order lines, one row per refund (order_lines.raw->'refunds').
CREATE VIEW order_line_refunds AS
SELECT l.source, l.order_id, l.order_line_id, o.shop_id, o.currency_iso_code,
       r->>'id' AS refund_id, (r->>'amount')::numeric AS amount,
       (r->>'quantity')::integer AS quantity, (r->>'shipping_amount')::numeric AS shipping_amount,
       (r->>'commission_amount')::numeric AS commission_amount, r->>'reason_code' AS reason_code,
       r->>'state' AS state, (r->>'created_date')::timestamptz AS created_date, r AS raw
FROM order_lines l
JOIN orders o ON o.source = l.source AND o.order_id = l.order_id
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(l.raw->'refunds') = 'array' THEN l.raw->'refunds' ELSE '[]'::jsonb END
) AS r;

-- Cancelations of order lines, one row per cancelation (order_lines.raw->'cancelations').
CREATE VIEW order_line_cancelations AS
SELECT l.source, l.order_id, l.order_line_id, o.shop_id, o.currency_iso_code,
       c->>'id' AS cancelation_id, (c->>'amount')::numeric AS amount,
       (c->>'quantity')::integer AS quantity, (c->>'shipping_amount')::numeric AS shipping_amount,
       (c->>'commission_amount')::numeric AS commission_amount, c->>'reason_code' AS reason_code,
       (c->>'created_date')::timestamptz AS created_date, c AS raw
FROM order_lines l
JOIN orders o ON o.source = l.source AND o.order_id = l.order_id
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(l.raw->'cancelations') = 'array' THEN l.raw->'cancelations' ELSE '[]'::jsonb END
) AS c;

-- Orders placed per UTC day, shop and currency, refused and canceled orders left out.
CREATE VIEW daily_sales AS
SELECT source, shop_id, currency_iso_code, (created_date AT TIME ZONE 'UTC')::date AS day,
       count(*) AS orders, sum(price) AS items_amount, sum(shipping_price) AS shipping_amount,
       sum(total_price) AS total_amount, sum(total_commission) AS commission
FROM orders
WHERE order_state NOT IN ('REFUSED', 'CANCELED')
GROUP BY source, shop_id, currency_iso_code, (created_date AT TIME ZONE 'UTC')::date;
