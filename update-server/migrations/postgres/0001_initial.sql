-- Gantry server schema, version 1 (PostgreSQL). Keep in step with
-- ../sqlite/0001_initial.sql: the same tables, columns and meaning.

-- Secrets shared by every server node (e.g. the device-token HMAC key).
CREATE TABLE server_secrets (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

-- Counters other nodes poll to drop cached state ('desired' bumps on every
-- change to what any device should run).
CREATE TABLE generations (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO generations (name, value) VALUES ('desired', 0);

CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE trust_roots (
    version BIGINT PRIMARY KEY,
    document BYTEA NOT NULL,
    installed_at BIGINT NOT NULL,
    installed_by TEXT NOT NULL
);

CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    public_key BYTEA NOT NULL,
    key_id TEXT NOT NULL,
    enrolled_at BIGINT NOT NULL,
    enrolled_by TEXT NOT NULL,
    disabled BIGINT NOT NULL DEFAULT 0,
    last_seen BIGINT,
    inventory TEXT,
    inventory_hash BYTEA
);

CREATE TABLE device_groups (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    PRIMARY KEY (device_id, name)
);
CREATE INDEX device_groups_name ON device_groups (name);

CREATE TABLE device_tags (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    tag TEXT NOT NULL,
    PRIMARY KEY (device_id, tag)
);
CREATE INDEX device_tags_tag ON device_tags (tag);

CREATE TABLE enrollment_tokens (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    groups_json TEXT NOT NULL,
    tags_json TEXT NOT NULL,
    uses_left BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

CREATE TABLE blobs (
    sha256 TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE releases (
    manifest_digest TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    sequence BIGINT NOT NULL,
    envelope_sha256 TEXT NOT NULL,
    envelope_size BIGINT NOT NULL,
    vendor_id TEXT,
    class_id TEXT,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX releases_stream ON releases (stream, sequence);

CREATE TABLE release_payloads (
    manifest_digest TEXT NOT NULL REFERENCES releases (manifest_digest) ON DELETE CASCADE,
    component BIGINT NOT NULL,
    uri TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size BIGINT NOT NULL,
    PRIMARY KEY (manifest_digest, component)
);

-- What each device should run, per stream (written by operators now, by
-- the rollout engine next).
CREATE TABLE device_assignments (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    stream TEXT NOT NULL,
    manifest_digest TEXT NOT NULL REFERENCES releases (manifest_digest),
    assigned_at BIGINT NOT NULL,
    assigned_by TEXT NOT NULL,
    rollout_id TEXT,
    PRIMARY KEY (device_id, stream)
);

-- What each device reported it runs, per stream: confirmed, never hoped.
CREATE TABLE device_streams (
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    stream TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, stream)
);

CREATE TABLE device_reports (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    stream TEXT NOT NULL,
    manifest_digest TEXT NOT NULL,
    state TEXT NOT NULL,
    progress BIGINT,
    detail TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX device_reports_device ON device_reports (device_id, id);

-- Rollouts: designed here, driven by the rollout engine (next milestone).
CREATE TABLE rollouts (
    id TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL REFERENCES releases (manifest_digest),
    target_group TEXT,
    target_tags_json TEXT NOT NULL,
    stages_json TEXT NOT NULL,
    success_threshold BIGINT NOT NULL,
    error_threshold BIGINT NOT NULL,
    state TEXT NOT NULL,
    current_stage BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

CREATE TABLE rollout_devices (
    rollout_id TEXT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    stage BIGINT NOT NULL,
    state TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, device_id)
);
