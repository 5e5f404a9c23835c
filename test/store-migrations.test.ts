import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { describe, expect, it } from 'vitest';
import { migrate, openDatabase, schemaVersion } from '../src/store/db.js';
import { MIGRATIONS } from '../src/store/migrations.js';
import { AppError } from '../src/errors.js';
import { tempDir } from './helpers/fs.js';
import { EpochStore } from '../src/store/epochs.js';
import { PseudonymStore, digestPrefix } from '../src/store/pseudonyms.js';
import { ensureFilled } from '../src/sync/reseed.js';
import { GOVWAY_RECIPE, PseudonymHasher } from '../src/crypto/pseudonym.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { OutboxStore } from '../src/store/outbox.js';

const versions = (db: Database.Database) => (db.prepare('SELECT version FROM schema_migrations ORDER BY version').all() as { version: number }[]).map((r) => r.version);

describe('migrations', () => {
  it('creates a fresh database with mode 0600, in WAL mode, with every migration recorded', () => {
    const file = path.join(tempDir(), 'nested', 'state.db');
    const db = openDatabase(file);
    try {
      expect(fs.statSync(file).mode & 0o777).toBe(0o600);
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(Number(db.pragma('busy_timeout', { simple: true }))).toBeGreaterThan(0);
      expect(versions(db)).toEqual(MIGRATIONS.map((m) => m.version).sort((a, b) => a - b));
      expect(schemaVersion(db)).toBe(Math.max(...MIGRATIONS.map((m) => m.version)));
      const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((t) => t.name);
      for (const table of ['subjects', 'subject_eservices', 'eservices', 'epochs', 'outbox', 'sink_positions', 'resync_reports']) expect(tables).toContain(table);
    } finally {
      db.close();
    }
  });

  it('version 4: a subject added while an epoch is still pending is back-matched against the signals that epoch logged before the migration', () => {
    const file = path.join(tempDir(), 'state.db');
    const v3 = openDatabase(file, { migrations: MIGRATIONS.filter((m) => m.version <= 3) });
    const key = 'RSSMRA80A01H501U';
    const objectId = new PseudonymHasher(GOVWAY_RECIPE, 'seed', 'SHA-256').pseudonym(key);
    v3.prepare("INSERT INTO eservices (eservice_id, name, created_at) VALUES ('es-1', 'one', 1)").run();
    v3.prepare("INSERT INTO epochs (eservice, start_signal_id, status, seed, algorithm, template, encoding, pseudonym_count, created_at) VALUES (1, 0, 'known', 'seed', 'SHA-256', '${subject}${seed}', 'base64', 0, 1)").run();
    v3.prepare("INSERT INTO signal_log (eservice, signal_id, epoch, unmatched, signal_type, object_type, object_id, received_at) VALUES (1, 5, 1, 1, 'UPDATE', 'residence', ?, ?)").run(objectId, Date.now());
    v3.close();

    const db = openDatabase(file);
    try {
      expect(new EpochStore(db).get(1)!.fillState).toBe('pending');
      const writer = new SubjectWriter(db, { index: { backfill: true, includeSubjectKey: false, eserviceNames: new Map([['es-1', 'one']]) } });
      writer.upsertBatch([{ key, ref: 'r1', eservices: 'all' }]);
      const events = new OutboxStore(db).all().map((r) => JSON.parse(r.payload) as { signalId: number; subjectRef: string; backfilled?: boolean });
      expect(events.map((e) => ({ signalId: e.signalId, subjectRef: e.subjectRef, backfilled: e.backfilled }))).toEqual([{ signalId: 5, subjectRef: 'r1', backfilled: true }]);
      // No index is written for a pending epoch: its fill computes everyone.
      expect(new PseudonymStore(db).exists(1)).toBe(false);
    } finally {
      db.close();
    }
  });

  it('version 4 turns the full-digest pseudonyms of a version-3 database into pending epochs, filled again on demand into a compact table', async () => {
    const file = path.join(tempDir(), 'state.db');
    const v1 = openDatabase(file, { migrations: MIGRATIONS.filter((m) => m.version <= 3) });
    v1.prepare("INSERT INTO subjects (key, ref, added_at) VALUES ('RSSMRA80A01H501U', 'r1', 1), ('VRDGPP80A01H501X', 'r2', 1)").run();
    v1.prepare("INSERT INTO eservices (eservice_id, name, created_at) VALUES ('es-1', 'one', 1)").run();
    v1.prepare("INSERT INTO epochs (eservice, start_signal_id, status, seed, algorithm, template, encoding, pseudonym_count, created_at) VALUES (1, 0, 'known', 'seed', 'SHA-256', '${subject}${seed}', 'base64', 2, 1)").run();
    v1.prepare("INSERT INTO pseudonyms (epoch, digest, subject_id) VALUES (1, x'00', 1), (1, x'01', 2)").run();
    v1.close();

    const db = openDatabase(file);
    try {
      expect(schemaVersion(db)).toBe(Math.max(...MIGRATIONS.map((m) => m.version)));
      expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 'pseudonyms'").get()).toBeUndefined();
      const epoch = new EpochStore(db).get(1)!;
      expect({ fillState: epoch.fillState, pseudonymCount: epoch.pseudonymCount, seedKept: epoch.seed === 'seed' }).toEqual({ fillState: 'pending', pseudonymCount: 0, seedKept: true });
      const result = await ensureFilled(db, 1, { eserviceId: 'es-1' });
      expect(result).toMatchObject({ filled: true, pseudonyms: 2 });
      expect(new EpochStore(db).get(1)!.fillState).toBe('ready');
      const hasher = new PseudonymHasher(GOVWAY_RECIPE, 'seed', 'SHA-256');
      const store = new PseudonymStore(db);
      expect(store.candidates(1, digestPrefix(hasher.digest('VRDGPP80A01H501X'))).map((c) => c.ref)).toEqual(['r2']);
    } finally {
      db.close();
    }
  });

  it('re-opening applies nothing and keeps the data', () => {
    const file = path.join(tempDir(), 'state.db');
    const first = openDatabase(file);
    first.prepare("INSERT INTO subjects (key, ref, added_at) VALUES ('K', 'r', 1)").run();
    const appliedAt = first.prepare('SELECT version, applied_at FROM schema_migrations ORDER BY version').all();
    first.close();

    const again = openDatabase(file);
    try {
      expect(migrate(again)).toEqual([]);
      expect(again.prepare('SELECT version, applied_at FROM schema_migrations ORDER BY version').all()).toEqual(appliedAt);
      expect(again.prepare('SELECT COUNT(*) AS n FROM subjects').get()).toEqual({ n: 1 });
    } finally {
      again.close();
    }
  });

  it('applies only the pending migrations of an older database', () => {
    const file = path.join(tempDir(), 'state.db');
    const extra = { version: Math.max(...MIGRATIONS.map((m) => m.version)) + 1, name: 'test addition', sql: 'CREATE TABLE test_addition (x INTEGER)' };
    openDatabase(file).close();
    const db = openDatabase(file, { migrations: [...MIGRATIONS, extra] });
    try {
      expect(versions(db)).toContain(extra.version);
      expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 'test_addition'").get()).toBeDefined();
    } finally {
      db.close();
    }
  });

  it('refuses a database with a newer schema than this program knows, leaving it untouched', () => {
    const file = path.join(tempDir(), 'state.db');
    openDatabase(file).close();
    const raw = new Database(file);
    const newer = Math.max(...MIGRATIONS.map((m) => m.version)) + 5;
    raw.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(newer, 'from the future', Date.now());
    raw.close();

    let error: unknown;
    try {
      openDatabase(file).close();
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(AppError);
    expect((error as AppError).code).toBe('DB_ERROR');
    expect((error as AppError).message).toContain(`schema version ${newer} is newer`);
    const check = new Database(file, { readonly: true });
    expect(versions(check)).toContain(newer);
    check.close();
  });

  it('a read-only open needs an existing, migrated file', () => {
    const dir = tempDir();
    expect(() => openDatabase(path.join(dir, 'missing.db'), { readonly: true })).toThrow(/does not exist yet/);
    expect(fs.existsSync(path.join(dir, 'missing.db'))).toBe(false);
  });
});
