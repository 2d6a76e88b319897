-- The key store: a database of its own, apart from the main one, holding every key that unlocks a
-- recording. A backup of the main database holds no key, so restoring one taken before an erasure
-- cannot bring the erased recordings back; how long a destroyed key can survive is bounded by this
-- database's own backups (docs/privacy.md).
--
-- master key (configuration) wraps organisation keys; an organisation key wraps the data keys of
-- that organisation's recordings; a data key is the streaming AEAD's key material of one file.

CREATE TABLE organisation_keys (
    id               uuid PRIMARY KEY,
    organisation_id  uuid NOT NULL,
    wrapped_key      bytea NOT NULL,            -- AES-GCM(master key): nonce || ciphertext || tag; empty once retired
    master_key_id    text NOT NULL,             -- fingerprint of the master key that wraps it
    created_at       timestamptz NOT NULL DEFAULT now(),
    retired_at       timestamptz                -- replaced by a newer key: wraps nothing any more
);
-- One current key per organisation.
CREATE UNIQUE INDEX organisation_keys_current ON organisation_keys (organisation_id) WHERE retired_at IS NULL;

CREATE TABLE data_keys (
    recording_id         uuid PRIMARY KEY,
    organisation_id      uuid NOT NULL,
    organisation_key_id  uuid NOT NULL REFERENCES organisation_keys,
    wrapped_key          bytea NOT NULL,        -- AES-GCM(organisation key), associated data naming the recording
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX data_keys_organisation ON data_keys (organisation_id, created_at);
CREATE INDEX data_keys_wrapping ON data_keys (organisation_key_id);
