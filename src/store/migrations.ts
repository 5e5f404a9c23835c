/**
 * Versioned schema. Each migration runs once, in order, inside a transaction, and is recorded
 * in `schema_migrations`. Never edit a released migration: add a new one.
 *
 * Conventions: times are integer milliseconds since the epoch (UTC); `eservices.id` is the local
 * integer id, `eservices.eservice_id` the hub's uuid; an epoch covers the signals with
 * `signalId > start_signal_id` up to the next epoch's start.
 */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    sql: `
CREATE TABLE subjects (
  id            INTEGER PRIMARY KEY,
  key           TEXT NOT NULL UNIQUE,      -- normalized fiscal code / VAT code: personal data, never logged
  ref           TEXT,                      -- the consumer's local reference, may be logged
  all_eservices INTEGER NOT NULL DEFAULT 1, -- 1: follows every configured e-service
  added_at      INTEGER NOT NULL
);

-- For subjects with all_eservices = 0: the e-services (hub uuids) they follow.
CREATE TABLE subject_eservices (
  subject_id  INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
  eservice_id TEXT NOT NULL,
  PRIMARY KEY (subject_id, eservice_id)
) WITHOUT ROWID;
CREATE INDEX subject_eservices_by_eservice ON subject_eservices (eservice_id, subject_id);

CREATE TABLE eservices (
  id             INTEGER PRIMARY KEY,
  eservice_id    TEXT NOT NULL UNIQUE,
  name           TEXT NOT NULL,
  cursor         INTEGER NOT NULL DEFAULT 0, -- last processed signalId; only moves forward
  high_water     INTEGER NOT NULL DEFAULT 0, -- highest signalId ever processed (survives cursor set/reset)
  last_pull_at   INTEGER,                    -- last successful pull (any status 200/206)
  caught_up_at   INTEGER,                    -- last time the hub answered 200
  state          TEXT NOT NULL DEFAULT 'new', -- new | syncing | idle | failing | stopped | paused
  last_error     TEXT,
  last_error_code TEXT,
  last_error_at  INTEGER,
  signals_seen   INTEGER NOT NULL DEFAULT 0,
  matches        INTEGER NOT NULL DEFAULT 0,
  created_at     INTEGER NOT NULL
);

CREATE TABLE epochs (
  id                 INTEGER PRIMARY KEY,
  eservice           INTEGER NOT NULL REFERENCES eservices(id),
  start_signal_id    INTEGER NOT NULL,  -- the SEEDUPDATE id that opened it (0: from the beginning)
  status             TEXT NOT NULL,     -- known (seed proven for its start) | assumed (not proven) | unknown (no seed)
  seed               TEXT,              -- secret: never logged, never printed
  seed_fingerprint   TEXT,              -- first 8 hex of SHA-256(seed)
  algorithm          TEXT,              -- cryptoHashFunction as the producer sent it
  template           TEXT,
  encoding           TEXT,
  producer_signal_id INTEGER,           -- signalId in the crypto-info answer, if the producer sends it
  note               TEXT,              -- why the epoch is unknown or assumed (a ResyncReason)
  pseudonym_count    INTEGER NOT NULL DEFAULT 0,
  first_signal_id    INTEGER,           -- first and last change signal processed under this epoch
  last_signal_id     INTEGER,
  signal_count       INTEGER NOT NULL DEFAULT 0,
  created_at         INTEGER NOT NULL,
  retired_at         INTEGER            -- pseudonyms dropped: nothing can need them any more
);
CREATE INDEX epochs_by_eservice ON epochs (eservice, start_signal_id);

-- digest = raw hash bytes of the recipe; objectIds are decoded with the epoch's encoding to match.
CREATE TABLE pseudonyms (
  epoch      INTEGER NOT NULL,
  digest     BLOB NOT NULL,
  subject_id INTEGER NOT NULL,
  PRIMARY KEY (epoch, digest)
) WITHOUT ROWID;

-- Every signal processed within the retention period: de-duplicates rescans of late lower ids,
-- and keeps unmatched signals (no personal data: objectId is a pseudonym) for back-matching.
-- Deliberately no index on object_id: with random pseudonyms it would dirty one index page per
-- signal on the catch-up path (measured: 3x slower). Back-matching builds a sorted TEMP lookup
-- once per import instead (SignalLogStore.unmatched).
CREATE TABLE signal_log (
  eservice    INTEGER NOT NULL,
  signal_id   INTEGER NOT NULL,
  epoch       INTEGER,               -- NULL for SEEDUPDATE or signals of an unknown epoch
  unmatched   INTEGER NOT NULL,      -- 1: no subject matched (candidate for back-matching)
  signal_type TEXT NOT NULL,
  object_type TEXT NOT NULL,
  object_id   TEXT NOT NULL,
  received_at INTEGER NOT NULL,
  PRIMARY KEY (eservice, signal_id)
) WITHOUT ROWID;
CREATE INDEX signal_log_by_time ON signal_log (received_at);

CREATE TABLE outbox (
  seq         INTEGER PRIMARY KEY AUTOINCREMENT,
  event_id    TEXT NOT NULL UNIQUE,  -- eserviceId:signalId, or eserviceId:resync:<report id>
  eservice_id TEXT NOT NULL,
  signal_id   INTEGER,
  kind        TEXT NOT NULL,         -- signal | resync-required
  payload     TEXT NOT NULL,         -- the event as delivered (JSON)
  created_at  INTEGER NOT NULL
);
CREATE INDEX outbox_by_time ON outbox (created_at);

CREATE TABLE sink_positions (
  sink          TEXT PRIMARY KEY,
  position      INTEGER NOT NULL DEFAULT 0, -- last outbox seq the sink confirmed
  state         TEXT NOT NULL DEFAULT 'active', -- active | stopped
  delivered     INTEGER NOT NULL DEFAULT 0,
  last_error    TEXT,
  last_error_at INTEGER,
  updated_at    INTEGER
);

CREATE TABLE resync_reports (
  id             INTEGER PRIMARY KEY,
  eservice_id    TEXT NOT NULL,
  from_signal_id INTEGER NOT NULL,  -- inclusive
  to_signal_id   INTEGER NOT NULL,  -- inclusive
  reason         TEXT NOT NULL,     -- see ResyncReason in src/events.ts
  detail         TEXT,
  epoch          INTEGER,           -- the unknown epoch whose signals this covers, if any
  created_at     INTEGER NOT NULL,
  closed_at      INTEGER,           -- NULL while the range still grows (signals of an unknown epoch)
  acked_at       INTEGER
);
CREATE INDEX resync_reports_open ON resync_reports (eservice_id) WHERE acked_at IS NULL;
`,
  },
  {
    version: 2,
    name: 'skipped signals, cursor skip floor',
    sql: `
-- Signals of a page that parsed but that cannot be matched (ARCHITECTURE invariant 7): recorded
-- and passed. No objectId is kept: a malformed one may be anything, personal data included.
CREATE TABLE skipped_signals (
  eservice    INTEGER NOT NULL,
  signal_id   INTEGER NOT NULL,
  signal_type TEXT NOT NULL,
  object_type TEXT NOT NULL,        -- clipped
  reason      TEXT NOT NULL,        -- see SkipReason in src/hub/types.ts
  skipped_at  INTEGER NOT NULL,
  PRIMARY KEY (eservice, signal_id)
) WITHOUT ROWID;
CREATE INDEX skipped_signals_by_time ON skipped_signals (skipped_at);

-- The highest cursor an operator moved forward to (cursor set): the late-lower-id lookback
-- never re-reads below it, into the range the operator chose to skip.
ALTER TABLE eservices ADD COLUMN skip_floor INTEGER NOT NULL DEFAULT 0;

-- When the hub last showed, with a page of signals answered 200, that no SEEDUPDATE existed
-- beyond an assumed epoch's start when its seed was fetched (src/sync/engine.ts). Epochs from
-- before this version count as confirmed: they were judged by the rules of their time.
ALTER TABLE epochs ADD COLUMN confirmed_at INTEGER;
UPDATE epochs SET confirmed_at = created_at;
`,
  },
  {
    // Sinks with on_reject = "dead-letter": an event the receiver refused for good is kept here
    // (with its payload: the outbox may prune it once every sink moved past) and delivery goes on.
    version: 3,
    name: 'dead letters',
    sql: `
CREATE TABLE dead_letters (
  id          INTEGER PRIMARY KEY,
  sink        TEXT NOT NULL,
  seq         INTEGER NOT NULL,      -- outbox seq of the event
  event_id    TEXT NOT NULL,
  eservice_id TEXT NOT NULL,
  payload     TEXT NOT NULL,         -- the event as offered to the sink
  status      INTEGER,               -- HTTP status, or the exec command's exit code
  response    TEXT,                  -- the receiver's answer, clipped (see src/sinks/webhook.ts)
  error       TEXT NOT NULL,
  state       TEXT NOT NULL DEFAULT 'dead', -- dead | retry (queued again by "sinks dead-letters retry")
  attempts    INTEGER NOT NULL DEFAULT 1,
  created_at  INTEGER NOT NULL,
  updated_at  INTEGER NOT NULL,
  UNIQUE (sink, event_id)
);
CREATE INDEX dead_letters_by_state ON dead_letters (sink, state, id);
`,
  },
  {
    // The late-lower-id lookback counts from the start of the last run, not its end: a run that
    // waited out a rotation race may end minutes after it saw the signals a lower id can hide below.
    version: 4,
    name: 'last run start',
    sql: `ALTER TABLE eservices ADD COLUMN last_run_started_at INTEGER;`,
  },
  {
    // Delegations (SPEC §8c): a delegate pulls one stream per e-service for all its delegators.
    // `subjects` stays one row per key (pseudonyms are computed per key); who follows a key is
    // now a set of memberships, one per tenant, each with its own ref and e-service list. The
    // subject's own `ref`, `all_eservices` and `subject_eservices` are kept as the union of its
    // memberships (the e-services its pseudonyms are computed for) and the own membership's ref.
    version: 5,
    name: 'subject tenants, outbox routing columns',
    sql: `
-- tenant = '' is the consumer's own subject; otherwise the delegator's id (see src/tenant.ts).
CREATE TABLE subject_tenants (
  subject_id    INTEGER NOT NULL REFERENCES subjects(id) ON DELETE CASCADE,
  tenant        TEXT NOT NULL,
  ref           TEXT,                      -- the tenant's local reference for the subject
  all_eservices INTEGER NOT NULL DEFAULT 1,
  added_at      INTEGER NOT NULL,          -- when this tenant added the key (the backfilled flag)
  PRIMARY KEY (subject_id, tenant)
) WITHOUT ROWID;
CREATE INDEX subject_tenants_by_tenant ON subject_tenants (tenant, subject_id);

-- For memberships with all_eservices = 0: the e-services (hub uuids) that tenant follows.
CREATE TABLE subject_tenant_eservices (
  subject_id  INTEGER NOT NULL,
  tenant      TEXT NOT NULL,
  eservice_id TEXT NOT NULL,
  PRIMARY KEY (subject_id, tenant, eservice_id),
  FOREIGN KEY (subject_id, tenant) REFERENCES subject_tenants (subject_id, tenant) ON DELETE CASCADE
) WITHOUT ROWID;

-- Every subject stored so far is the consumer's own.
INSERT INTO subject_tenants (subject_id, tenant, ref, all_eservices, added_at)
  SELECT id, '', ref, all_eservices, added_at FROM subjects;
INSERT INTO subject_tenant_eservices (subject_id, tenant, eservice_id)
  SELECT subject_id, '', eservice_id FROM subject_eservices;

-- What a sink filter routes on (src/sinks/delivery.ts): NULL for resync-required events,
-- which concern every tenant and every signal type of their e-service.
ALTER TABLE outbox ADD COLUMN tenant TEXT;
ALTER TABLE outbox ADD COLUMN signal_type TEXT;
UPDATE outbox SET tenant = '', signal_type = json_extract(payload, '$.signalType') WHERE kind = 'signal';
`,
  },
  {
    version: 6,
    name: 'compact per-epoch pseudonym tables, filled lazily in chunks',
    // The full-digest table gives way to one table per epoch (src/store/pseudonyms.ts), created
    // by the fill. Epochs still live become 'pending': their pseudonyms are recomputed, in
    // chunks, before their next change signal is matched (no data is lost: they derive from
    // the subjects and the stored seed).
    sql: `
DROP TABLE pseudonyms;
ALTER TABLE epochs ADD COLUMN fill_state TEXT NOT NULL DEFAULT 'pending'; -- pending | filling | ready
ALTER TABLE epochs ADD COLUMN fill_after INTEGER NOT NULL DEFAULT 0;       -- while filling: subjects with id <= fill_after are in
UPDATE epochs SET pseudonym_count = 0;
-- A late SEEDUPDATE's re-match of logged signals waits for its epoch's fill (src/sync/engine.ts).
ALTER TABLE epochs ADD COLUMN rematch_to INTEGER;
`,
  },
  {
    version: 7,
    name: 'spooled fills: merge progress and skips',
    // A fill now hashes every subject into a spool of prefix buckets, then writes the table in
    // prefix order, bucket by bucket (src/sync/reseed.ts). A fill left half-done by version 6
    // spools again: its rows stay, and the merge's INSERT OR IGNORE keeps them exact.
    sql: `
ALTER TABLE epochs ADD COLUMN fill_bits INTEGER;   -- the spool's bucket bits (NULL: still spooling)
ALTER TABLE epochs ADD COLUMN fill_merged INTEGER; -- buckets written to the table so far (NULL: still spooling)
UPDATE epochs SET fill_after = 0 WHERE fill_state = 'filling';
-- Spooled rows not to write: subjects removed from the e-service after they were spooled.
CREATE TABLE fill_skips (
  epoch_id   INTEGER NOT NULL,
  prefix     INTEGER NOT NULL,
  subject_id INTEGER NOT NULL,
  PRIMARY KEY (epoch_id, prefix, subject_id)
) WITHOUT ROWID;
`,
  },
];
