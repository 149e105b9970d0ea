-- A shop's domain is a host name, which has no case: `Example.myshopify.com` and
-- `example.myshopify.com` are one shop. The unique constraint of 0001 compared the text as
-- written, so both could be created, and the Shopify privacy webhooks (which find the shop
-- case aside) could erase or export the other one's data. Shops are now created with the
-- domain in lower case, and no two may differ only in case. Where two already do, the
-- migration stops and names them: which one Shopify means is the operator's to decide.
-- (No percent sign in this file: the driver reads it as a parameter placeholder.)
DO $$
DECLARE
    clashing text;
BEGIN
    SELECT string_agg(domains, '; ') INTO clashing FROM (
        SELECT string_agg(domain || ' (shop ' || id || ')', ', ' ORDER BY id) AS domains
        FROM shop GROUP BY lower(domain) HAVING count(*) > 1
    ) AS clash;
    IF clashing IS NOT NULL THEN
        RAISE EXCEPTION USING MESSAGE = 'shops whose domains differ only in case (rename or delete one of each): ' || clashing;
    END IF;
END $$;

CREATE UNIQUE INDEX shop_domain_lower_key ON shop (lower(domain));
UPDATE shop SET domain = lower(domain) WHERE domain <> lower(domain);
