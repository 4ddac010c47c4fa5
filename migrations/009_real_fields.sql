-- Real Mirakl fields (docs/mirakl.md). Refunds carry `refund_state`; the deprecated
-- `state` "will not contain newer states" (WAITING_REFUND_TAX_CONFIRMATION), so the
-- view reads refund_state and falls back to state for documents that only have it.
-- Views hold no data: existing rows come out right at once. New columns go at the end.
CREATE OR REPLACE VIEW order_line_refunds AS
SELECT l.source, l.order_id, l.order_line_id, o.shop_id, o.currency_iso_code,
       r->>'id' AS refund_id, (r->>'amount')::numeric AS amount,
       (r->>'quantity')::integer AS quantity, (r->>'shipping_amount')::numeric AS shipping_amount,
       (r->>'commission_amount')::numeric AS commission_amount, r->>'reason_code' AS reason_code,
       coalesce(r->>'refund_state', r->>'state') AS state,
       (r->>'created_date')::timestamptz AS created_date, r AS raw,
       coalesce(r->>'refund_state', r->>'state') AS refund_state,
       r->>'order_refund_id' AS order_refund_id,
       (r->>'commission_total_amount')::numeric AS commission_total_amount
FROM order_lines l
JOIN orders o ON o.source = l.source AND o.order_id = l.order_id
CROSS JOIN LATERAL jsonb_array_elements(
    CASE WHEN jsonb_typeof(l.raw->'refunds') = 'array' THEN l.raw->'refunds' ELSE '[]'::jsonb END
) AS r;
