-- Relay stats in buckets, postgres dialect. Keep in step with ../sqlite/0006_relay_stat_buckets.sql.
--
-- The route plugin's windows (sent, delivered, deferred, bounced, blocked, latency per
-- relay over the last minute, quarter hour, hour) were aggregates over the events of
-- each window, so their cost grew with the traffic of the last hour. Now every event
-- that counts is added to its relay's 10-second bucket in the transaction that appends
-- it (`store/stat_buckets.rs`), and a window sums at most 360 buckets per relay. What
-- counts is documented on `EventKind`; buckets older than the stats keep are pruned.
CREATE TABLE relay_stat_buckets (
    relay TEXT NOT NULL,
    bucket_ms BIGINT NOT NULL,
    sent BIGINT NOT NULL,
    delivered BIGINT NOT NULL,
    deferred BIGINT NOT NULL,
    hard_bounced BIGINT NOT NULL,
    soft_bounced BIGINT NOT NULL,
    blocked BIGINT NOT NULL,
    latency_sum BIGINT NOT NULL,
    latency_n BIGINT NOT NULL,
    PRIMARY KEY (relay, bucket_ms)
);

-- The traffic already recorded, so the windows do not start empty after the upgrade.
INSERT INTO relay_stat_buckets (relay, bucket_ms, sent, delivered, deferred, hard_bounced,
    soft_bounced, blocked, latency_sum, latency_n)
SELECT relay, (at_ms / 10000) * 10000,
    SUM(CASE WHEN source IS NULL THEN 1 ELSE 0 END),
    SUM(CASE WHEN kind = 'delivered' AND source IS NULL THEN 1 ELSE 0 END),
    SUM(CASE WHEN kind = 'deferred' OR (kind = 'attempted' AND COALESCE(hard, 0) = 0)
        THEN 1 ELSE 0 END),
    SUM(CASE WHEN kind IN ('bounced', 'failed', 'attempted') AND hard = 1 THEN 1 ELSE 0 END),
    SUM(CASE WHEN kind IN ('bounced', 'failed') AND COALESCE(hard, 0) = 0 THEN 1 ELSE 0 END),
    SUM(CASE WHEN class = 'blocked' THEN 1 ELSE 0 END),
    COALESCE(SUM(latency_ms), 0),
    COUNT(latency_ms)
FROM events
WHERE relay IS NOT NULL
  AND kind IN ('attempted', 'delivered', 'deferred', 'bounced', 'failed')
GROUP BY relay, (at_ms / 10000) * 10000;

-- Only the stats read events by relay and time; every event paid for this index.
DROP INDEX events_relay_at;
