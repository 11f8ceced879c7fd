-- What each rollout device ran before the rollout assigned it, so a halted
-- or cancelled rollout can put it back.
ALTER TABLE rollout_devices ADD COLUMN previous_digest TEXT;
CREATE INDEX rollout_devices_state ON rollout_devices (rollout_id, state);
