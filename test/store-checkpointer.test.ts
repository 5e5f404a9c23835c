import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { BackgroundCheckpointer } from '../src/store/checkpointer.js';
import { openDatabase } from '../src/store/db.js';
import { tempDir } from './helpers/fs.js';

describe('checkpoints on a worker thread', () => {
  it('two overlapping jobs on one connection (an import and a reseed): the automatic checkpoint comes back only when the last stops, as it was', async () => {
    const db = openDatabase(path.join(tempDir(), 'state.db'));
    try {
      db.pragma('wal_autocheckpoint = 777');
      const first = BackgroundCheckpointer.start(db)!;
      const second = BackgroundCheckpointer.start(db)!;
      expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(0);
      await first.stop();
      expect(db.pragma('wal_autocheckpoint', { simple: true }), 'the second job still checkpoints on its worker').toBe(0);
      await second.stop();
      expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(777);
      // And again from scratch: nothing left over from the first pair.
      const third = BackgroundCheckpointer.start(db)!;
      await third.stop();
      expect(db.pragma('wal_autocheckpoint', { simple: true })).toBe(777);
    } finally {
      db.close();
    }
  });
});
