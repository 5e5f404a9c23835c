import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { AppError } from '../src/errors.js';
import { openDatabase } from '../src/store/db.js';
import { WriterLock } from '../src/store/lock.js';
import { tempDir } from './helpers/fs.js';

function thrown(fn: () => unknown): AppError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(AppError);
    return err as AppError;
  }
  throw new Error('expected an error');
}

describe('WriterLock', () => {
  it('on a first run creates the database folder (0700), as openDatabase would', () => {
    const file = path.join(tempDir(), 'state', 'nested', 'signalhub-sync.db');
    const lock = WriterLock.acquire(file, 'first run');
    try {
      expect(fs.statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
      openDatabase(file).close();
    } finally {
      lock.release();
    }
  });

  it('refuses a second holder, naming the first, until the first releases', () => {
    const file = path.join(tempDir(), 'signalhub-sync.db');
    const first = WriterLock.acquire(file, 'run');
    const refusal = thrown(() => WriterLock.acquire(file, 'cursor set'));
    expect(refusal.code).toBe('DB_LOCKED');
    expect(refusal.message).toContain(`pid ${process.pid}, "run"`);
    first.release();
    WriterLock.acquire(file, 'cursor set').release();
  });

  it('a folder that cannot be made is a DB_ERROR naming the lock file', () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'plain-file'), '');
    const file = path.join(dir, 'plain-file', 'signalhub-sync.db');
    const err = thrown(() => WriterLock.acquire(file, 'run'));
    expect(err.code).toBe('DB_ERROR');
    expect(err.message).toContain(`${file}.lock`);
    expect(err.message).toMatch(/: E[A-Z]+$/);
  });
});
