-- Shopify's customers/redact and customers/data_request name the customer by `customer.id`, and
-- by `customer.phone` only when the customer's own phone is set. A contact imported from
-- Shopify's export by its `Default Address Phone` (the customer's `Phone` blank) was found by
-- neither and could never be erased or exported. The export's `Customer ID` (or a JSON row's
-- `shopify_customer_id`) is now kept on the contact and on a data export, and both webhooks
-- find the customer by it too. Text: Shopify's ids are numbers, sent as numbers or strings.
ALTER TABLE contact ADD COLUMN shopify_customer_id text;
CREATE INDEX contact_shopify_customer ON contact (shop_id, shopify_customer_id)
    WHERE shopify_customer_id IS NOT NULL;
ALTER TABLE data_export ADD COLUMN shopify_customer_id text;
