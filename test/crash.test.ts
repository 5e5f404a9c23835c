import { describe, expect, it } from 'vitest';
import { openDatabase } from '../src/store/db.js';
import { OutboxStore } from '../src/store/outbox.js';
import { EServiceStore } from '../src/store/eservices.js';
import { SubjectWriter } from '../src/subjects/apply.js';
import { subjectIndexOptions } from '../src/subjects/import.js';
import { seededRandom } from './helpers/random.js';
import { createWorld, fiscalCode } from './helpers/world.js';
import { spawnCli, runCli } from './helpers/cli.js';

const ES = '44444444-4444-4444-8444-444444444444';


describe('crash safety (invariant 1)', () => {
  it('SIGKILL at random moments during a catch-up loses and duplicates nothing', async () => {
    // Small pages make many transactions, so kills land at every stage: mid-page, mid-commit, mid-reseed.
    const world = await createWorld({ eservices: [{ id: ES, name: 'residenze' }], toml: '[hub]\npage_size = 20\n[crypto]\nrotation_wait_seconds = 1\n[subjects]\nbackfill = true' });
    try {
      const rnd = seededRandom(7);
      const locals = Array.from({ length: 200 }, (_, i) => fiscalCode(1000 + i));
      const db = openDatabase(world.config.database);
      new SubjectWriter(db, { index: subjectIndexOptions(world.config) }).upsertBatch(locals.map((key, i) => ({ key, ref: `ref-${i}`, eservices: 'all' })));
      db.close();

      // The consumer was following the e-service before this backlog began (it knows the first seed).
      const first = await runCli(['--config', world.configFile, 'sync', '--once']);
      expect(first.code, first.stderr).toBe(0);

      const expected = new Set<string>();
      const produce = (count: number) => {
        for (let i = 0; i < count; i++) {
          if (rnd() < 0.02) expected.add(`${ES}:${world.sim.depositForSubject(ES, locals[Math.floor(rnd() * locals.length)]!, 'UPDATE', 'residence')}`);
          else world.sim.generateSignals(ES, 1);
        }
      };
      produce(10_000);
      world.sim.rotateSeed(ES); // a reseed inside the crash window
      produce(10_000);

      let kills = 0;
      let runs = 0;
      while (kills < 24 && runs < 200) {
        runs++;
        const child = spawnCli(['--config', world.configFile, 'sync', '--once'], { stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
        const delay = 250 + Math.floor(rnd() * 900);
        const timer = setTimeout(() => child.kill('SIGKILL'), delay);
        const code = await exited;
        clearTimeout(timer);
        if (child.signalCode === 'SIGKILL') kills++;
        else expect(code, stderr).toBe(0);
        if (runs % 4 === 0) produce(500); // the producer keeps depositing meanwhile
      }
      expect(kills).toBeGreaterThanOrEqual(20);

      const final = await runCli(['--config', world.configFile, 'sync', '--once'], { timeoutMs: 120_000 });
      expect(final.code, final.stderr).toBe(0);

      const check = openDatabase(world.config.database, { readonly: true });
      const rows = new OutboxStore(check).all();
      const ids = rows.map((r) => r.eventId);
      expect(new Set(ids).size).toBe(ids.length);
      expect(rows.filter((r) => r.kind !== 'signal')).toEqual([]);
      expect(new Set(ids)).toEqual(expected);
      expect(new EServiceStore(check).get(ES)!.cursor).toBe(world.sim.lastSignalId(ES));
      check.close();
    } finally {
      await world.close();
    }
  }, 300_000);
});
