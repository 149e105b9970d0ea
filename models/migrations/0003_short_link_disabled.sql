-- Short links an admin has disabled (SPEC 6): `GET /r/{code}` answers 410 and counts nothing.
-- Nullable with no default, so adding it rewrites no row of an existing table.
ALTER TABLE short_link ADD COLUMN disabled_at timestamptz;
