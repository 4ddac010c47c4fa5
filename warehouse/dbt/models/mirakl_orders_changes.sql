-- The orders, kept current incrementally from the change feed (docs/warehouse.md).
--
-- A run reads the orders whose change_id lies in [since, high-water). The high-water is
-- change_high_water(): every change below it has committed, so no row below it can still
-- appear. It is read in the same statement (the same snapshot) as the rows. Every row
-- stores the high-water of the run that wrote it (feed_high_water) and the next run
-- starts from their maximum: the feed's rule, "the high-water is the next since".
-- Starting after the largest change_id loaded, without the high-water bound, is what
-- skips rows: a merge that started first and commits last brings smaller ids. A run
-- that finds nothing new writes no row, so the next one reads from an earlier high-water
-- again: harmless, rows are replaced by key.
{{
    config(
        materialized='incremental',
        unique_key=['source', 'order_id'],
        incremental_strategy='delete+insert'
    )
}}

with feed as (
    select {{ var('mirakl_schema', 'mirakl') }}.change_high_water() as high_water
)

select
    o.source,
    o.order_id,
    o.commercial_id,
    o.order_state,
    o.order_state_reason_code,
    o.shop_id,
    o.channel_code,
    o.created_date,
    o.last_updated_date,
    o.acceptance_decision_date,
    o.customer_debited_date,
    o.shipping_deadline,
    o.currency_iso_code,
    o.price,
    o.shipping_price,
    o.total_price,
    o.total_commission,
    o.payment_type,
    o.payment_workflow,
    o.customer_id,
    o.shipping_type_code,
    o.shipping_zone_code,
    o.has_incident,
    o.fully_refunded,
    o.raw,
    o.run_id,
    o.synced_at,
    o.change_id,
    feed.high_water as feed_high_water
from {{ source('mirakl', 'orders') }} as o
cross join feed
where o.change_id < feed.high_water
{% if is_incremental() %}
    and o.change_id >= (select coalesce(max(t.feed_high_water), 0) from {{ this }} as t)
{% endif %}
