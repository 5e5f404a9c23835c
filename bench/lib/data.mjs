import crypto from 'node:crypto';
import fs from 'node:fs';
import { fiscalCodeCheckChar } from '../../dist/subjects/fiscal-code.js';

const LETTERS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ';
const letter = (i) => LETTERS[i % 26];

/**
 * A valid Italian fiscal code derived from n: distinct for n below 26^5 (the same derivation as
 * test/helpers/world.ts), so that subjects look like real ones (16 characters, check character).
 */
export function fiscalCode(n) {
  const surname = letter(n) + letter(Math.floor(n / 26)) + letter(Math.floor(n / 676));
  const name = letter(Math.floor(n / 17576)) + letter(Math.floor(n / 456976) + 3) + 'X';
  const year = String(n % 100).padStart(2, '0');
  const month = 'ABCDEHLMPRST'[Math.floor(n / 100) % 12];
  const day = String(1 + (Math.floor(n / 1200) % 28)).padStart(2, '0');
  const first15 = surname + name + year + month + day + 'H501';
  return first15 + fiscalCodeCheckChar(first15);
}

/** Writes `count` subjects as a CSV the `subjects import` command reads (key,ref). */
export async function writeSubjectsCsv(file, count) {
  const out = fs.createWriteStream(file);
  const write = (chunk) => (out.write(chunk) ? undefined : new Promise((r) => out.once('drain', r)));
  await write('key,ref\n');
  let chunk = '';
  for (let n = 0; n < count; n++) {
    chunk += `${fiscalCode(n)},ref-${n}\n`;
    if (chunk.length > 1 << 20) {
      await write(chunk);
      chunk = '';
    }
  }
  await write(chunk);
  await new Promise((resolve, reject) => out.end((err) => (err ? reject(err) : resolve())));
}

/** GovWay's recipe: base64(SHA-256(subject + seed)), as the producer computes it. */
export function govwayPseudonym(subjectKey, seed) {
  return crypto.createHash('sha256').update(subjectKey + seed, 'utf8').digest('base64');
}

const TYPES = ['CREATE', 'UPDATE', 'DELETE'];

/**
 * Signals 1..count for one e-service, in chunks: every `matchEvery`-th objectId is the pseudonym
 * of a stored subject (spread over the whole subject range), the others are pseudonyms of keys
 * nobody holds, so that every signal costs the consumer a decode and an index lookup.
 */
export function* signalChunks({ count, subjects, seed, matchEvery = 100, chunkSize = 50_000, salt = 'X' }) {
  let chunk = [];
  let matches = 0;
  for (let id = 1; id <= count; id++) {
    let objectId;
    if (id % matchEvery === 0) {
      const subject = ((id / matchEvery) * 7919) % subjects;
      objectId = govwayPseudonym(fiscalCode(subject), seed);
      matches++;
    } else {
      objectId = govwayPseudonym(`NOBODY${salt}${id}`, seed);
    }
    chunk.push({ signalType: TYPES[id % 3], objectId, objectType: 'residence', signalId: id });
    if (chunk.length === chunkSize) {
      yield { signals: chunk, matchesSoFar: matches };
      chunk = [];
    }
  }
  if (chunk.length > 0) yield { signals: chunk, matchesSoFar: matches };
}

/** How many signals of 1..count signalChunks makes matching (one per `matchEvery`). */
export function expectedMatches(count, matchEvery = 100) {
  return Math.floor(count / matchEvery);
}
