-- The server's second pass (issue 14).

-- Secrets live in files (update-server/src/secrets.rs), not in the database
-- an operator copies and backs up: the device-token HMAC key is now derived
-- from the server secret file. Devices holding a token log in again.
DROP TABLE server_secrets;

-- API tokens may expire; enrollment tokens may be revoked.
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE enrollment_tokens ADD COLUMN revoked_at BIGINT;

-- The vendor and class a device reports at check-in (hex UUIDs), so that a
-- release is deployed only to devices of its class.
ALTER TABLE devices ADD COLUMN vendor_id TEXT;
ALTER TABLE devices ADD COLUMN class_id TEXT;
CREATE INDEX devices_class ON devices (class_id);

-- Report retention deletes by age.
CREATE INDEX device_reports_at ON device_reports (at);
