-- Orders placed per UTC day, source, shop and currency, refused and canceled orders left
-- out: the daily_sales view of the mirror, as a table of your project. Amounts of
-- different currencies are never added together.
select
    (o.created_date at time zone 'UTC')::date as day,
    o.source,
    o.shop_id,
    o.currency_iso_code,
    count(*) as orders,
    sum(o.price) as items_amount,
    sum(o.shipping_price) as shipping_amount,
    sum(o.total_price) as total_amount,
    sum(o.total_commission) as commission
from {{ source('mirakl', 'orders') }} as o
where o.order_state not in ('REFUSED', 'CANCELED')
group by 1, 2, 3, 4
