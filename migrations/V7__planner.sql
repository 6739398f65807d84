-- The feed's rate as the last polls measured it: new events per second from one poll's page 1
-- to the next one's. The capture planner paces on it. `feed_rate_at_least` = that walk found
-- no event stored before (every page it read was all new): the feed brought at least this.
ALTER TABLE poll_state ADD COLUMN IF NOT EXISTS feed_rate_per_s DOUBLE PRECISION;
ALTER TABLE poll_state ADD COLUMN IF NOT EXISTS feed_rate_at_least BOOLEAN;
