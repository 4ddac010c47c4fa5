-- Per order that reached SHIPPED: from the first version seen in WAITING_ACCEPTANCE (else
-- the first version seen at all) to the first version seen in SHIPPED, in hours.
--
-- Both ends are versions the worker saw, dated by Mirakl's last_updated_date: a state
-- that came and went between two syncs is not seen, so a start can be late (a shorter
-- time). Orders whose first version seen is already SHIPPED have no start and are left
-- out, as are orders never seen in SHIPPED.
with history as (
    select source, order_id, last_updated_date, order_state, shop_id, currency_iso_code
    from {{ source('mirakl', 'order_history') }}
),

shipped as (
    select source, order_id, min(last_updated_date) as shipped_at
    from history
    where order_state = 'SHIPPED'
    group by source, order_id
),

before_shipping as (
    select
        h.source,
        h.order_id,
        min(case when h.order_state = 'WAITING_ACCEPTANCE' then h.last_updated_date end)
            as waiting_acceptance_at,
        min(h.last_updated_date) as first_seen_at
    from history as h
    inner join shipped as s on s.source = h.source and s.order_id = h.order_id
    where h.last_updated_date < s.shipped_at
    group by h.source, h.order_id
)

select
    b.source,
    b.order_id,
    v.shop_id,
    v.currency_iso_code,
    coalesce(b.waiting_acceptance_at, b.first_seen_at) as started_at,
    st.order_state as started_state,
    s.shipped_at,
    extract(epoch from s.shipped_at - coalesce(b.waiting_acceptance_at, b.first_seen_at))
        / 3600.0 as hours_to_ship
from before_shipping as b
inner join shipped as s on s.source = b.source and s.order_id = b.order_id
inner join history as st
    on st.source = b.source and st.order_id = b.order_id
    and st.last_updated_date = coalesce(b.waiting_acceptance_at, b.first_seen_at)
inner join history as v
    on v.source = s.source and v.order_id = s.order_id and v.last_updated_date = s.shipped_at
