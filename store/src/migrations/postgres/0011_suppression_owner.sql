-- Who added a suppression, postgres dialect. Keep in step with ../sqlite/0011_suppression_owner.sql.
--
-- `added_by` is `platform` (bounce processing, the admin API) or `tenant` (the tenant
-- through its own API). A tenant may remove only its own entries: an address the
-- platform suppressed (a hard bounce, a complaint) stays suppressed until an admin lifts
-- it, so a tenant cannot keep mailing addresses that hurt the shared relays' reputation.
-- Every entry before this migration was added by the platform (tenants could not add).
ALTER TABLE suppressions ADD COLUMN added_by TEXT NOT NULL DEFAULT 'platform';
