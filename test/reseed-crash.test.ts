import { describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../src/store/db.js';
import { OutboxStore } from '../src/store/outbox.js';
import { EServiceStore } from '../src/store/eservices.js';
import { EpochStore } from '../src/store/epochs.js';
import { PseudonymStore, digestPrefix } from '../src/store/pseudonyms.js';
import { bucketOf } from '../src/store/fill-spool.js';
import { PseudonymHasher, GOVWAY_RECIPE } from '../src/crypto/pseudonym.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { subjectIndexOptions } from '../src/subjects/import.js';
import { seededRandom } from './helpers/random.js';
import { createWorld, fiscalCode } from './helpers/world.js';
import { spawnCli, runCli } from './helpers/cli.js';

const ES = '54444444-4444-4444-8444-444444444444';
const SUBJECTS = 40_000;

/**
 * Every epoch's pseudonyms as the invariants want them: a ready epoch holds exactly one row per
 * subject, each the prefix of that subject's real pseudonym; a filling epoch that is merging its
 * spool holds exactly the subjects of the buckets merged so far (each bucket committed whole with
 * its progress), one still spooling only rows that are right; a pending one none; a retired one
 * has no table left once a run finished.
 */
function expectEpochsExact(db: Db, keys: string[], seedOf: (epochId: number) => string | null, finished: boolean): { filling: number; merging: number } {
  const epochs = new EpochStore(db);
  const store = new PseudonymStore(db);
  const es = new EServiceStore(db).get(ES)!;
  const idOf = new Map((db.prepare('SELECT key, id FROM subjects').all() as { key: string; id: number }[]).map((r) => [r.key, r.id]));
  let filling = 0;
  let merging = 0;
  for (const e of epochs.forEService(es.id)) {
    if (e.retiredAt !== null) {
      if (finished) expect(store.tables()).not.toContain(e.id);
      continue;
    }
    if (e.status === 'unknown') continue;
    const rows = store.exists(e.id) ? (db.prepare(`SELECT prefix, subject_id AS id FROM pseudonyms_${e.id} ORDER BY subject_id`).all() as { prefix: number; id: number }[]) : [];
    expect(rows.length, `epoch ${e.id} (${e.fillState}) count`).toBe(e.pseudonymCount);
    if (e.fillState === 'filling') filling++;
    if (e.fillState === 'filling' && e.fillMerged !== null) merging++;
    const hasher = new PseudonymHasher(GOVWAY_RECIPE, seedOf(e.id) ?? e.seed!, 'SHA-256');
    const all = keys.map((k) => ({ prefix: digestPrefix(hasher.digest(k)), id: idOf.get(k)! })).sort((a, b) => a.id - b.id);
    const right = new Map(all.map((r) => [r.id, r.prefix]));
    const want =
      e.fillState === 'ready'
        ? all
        : e.fillState === 'filling' && e.fillMerged !== null
          ? all.filter((r) => bucketOf(r.prefix, e.fillBits!) < e.fillMerged!)
          : e.fillState === 'filling'
            ? rows.filter((x) => right.get(x.id) === x.prefix)
            : [];
    expect(rows, `epoch ${e.id} (${e.fillState}, merged ${e.fillMerged}) rows`).toEqual(want);
  }
  return { filling, merging };
}

describe('crash safety of the chunked reseed (invariant 8 with invariant 1)', () => {
  it('SIGKILL at random moments while epochs are being filled: outbox and every epoch exact afterwards', async () => {
    const world = await createWorld({ eservices: [{ id: ES, name: 'residenze', cryptoHistory: true, historyDepth: 50, includeSignalId: true }], toml: '[hub]\npage_size = 50\n[crypto]\nrotation_wait_seconds = 1\n' });
    try {
      const rnd = seededRandom(13);
      const keys = Array.from({ length: SUBJECTS }, (_, i) => fiscalCode(5000 + i));
      const db0 = openDatabase(world.config.database);
      new SubjectWriter(db0, { index: subjectIndexOptions(world.config) }).upsertBatch(keys.map((key, i) => ({ key, ref: `ref-${i}`, eservices: 'all' })));
      db0.close();

      // The consumer follows the e-service from its first seed (no backlog predating it).
      const first = await runCli(['--config', world.configFile, 'sync', '--once']);
      expect(first.code, first.stderr).toBe(0);

      const expected = new Set<string>();
      const produce = (count: number) => {
        for (let i = 0; i < count; i++) {
          if (rnd() < 0.05) expected.add(`${ES}:${world.sim.depositForSubject(ES, keys[Math.floor(rnd() * keys.length)]!, 'UPDATE', 'residence')}`);
          else world.sim.generateSignals(ES, 1);
        }
      };
      // Four epochs, each with change signals: every one must be filled (40k subjects each)
      // before its signals are matched, so kills land mid-fill again and again.
      produce(300);
      for (let r = 0; r < 3; r++) {
        world.sim.rotateSeed(ES);
        produce(300);
      }

      let kills = 0;
      let midFill = 0;
      let midMerge = 0;
      let runs = 0;
      while ((midFill < 4 || midMerge < 2 || kills < 8) && runs < 60) {
        runs++;
        const child = spawnCli(['--config', world.configFile, '--log-level', 'info', 'sync', '--once'], { stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        // A third of the runs are killed at a random moment of the run; a third when a fill
        // starts (its info line), within its first 150 ms (an idle machine spools 40k subjects
        // in about 200 ms); a third when its merge starts (its info line), within 40 ms (the
        // merge of 40k takes about that): the test does not depend on how fast this machine is.
        const killAfter = (ms: number) => setTimeout(() => child.kill('SIGKILL'), ms);
        const moment = rnd();
        let timer = moment < 1 / 3 ? killAfter(300 + Math.floor(rnd() * 2500)) : undefined;
        const cue = moment < 2 / 3 ? 'computing the pseudonyms of a seed epoch' : 'writing the spooled pseudonyms';
        child.stderr!.setEncoding('utf8').on('data', (d: string) => {
          stderr += d;
          if (timer === undefined && stderr.includes(cue)) timer = killAfter(Math.floor(rnd() * (moment < 2 / 3 ? 150 : 40)));
        });
        const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
        const code = await exited;
        clearTimeout(timer);
        if (child.signalCode === 'SIGKILL') {
          kills++;
          const db = openDatabase(world.config.database, { readonly: true });
          try {
            // Right after a kill: no epoch is live half-filled, a filling one is exact up to its progress.
            const { filling, merging } = expectEpochsExact(db, keys, () => null, false);
            if (filling > 0) midFill++;
            if (merging > 0) midMerge++;
          } finally {
            db.close();
          }
        } else {
          expect(code, stderr).toBe(0);
          if (runs % 2 === 0) {
            // Caught up: open another epoch with signals, so that there is something to fill again.
            world.sim.rotateSeed(ES);
            produce(200);
          }
        }
      }
      expect(midFill, `kills ${kills}, runs ${runs}`).toBeGreaterThanOrEqual(4);
      expect(midMerge, `kills ${kills}, runs ${runs}, mid-fill ${midFill}`).toBeGreaterThanOrEqual(2);

      const final = await runCli(['--config', world.configFile, 'sync', '--once'], { timeoutMs: 180_000 });
      expect(final.code, final.stderr).toBe(0);
      const check = openDatabase(world.config.database, { readonly: true });
      try {
        const rows = new OutboxStore(check).all();
        const ids = rows.map((r) => r.eventId);
        expect(new Set(ids).size).toBe(ids.length);
        expect(rows.filter((r) => r.kind !== 'signal').map((r) => r.payload)).toEqual([]);
        expect(new Set(ids)).toEqual(expected);
        expect(new EServiceStore(check).get(ES)!.cursor).toBe(world.sim.lastSignalId(ES));
        expect(expectEpochsExact(check, keys, () => null, true).filling).toBe(0);
      } finally {
        check.close();
      }
    } finally {
      await world.close();
    }
  }, 600_000);
});
