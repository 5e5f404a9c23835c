/**
 * The subject import, in its own process: the code `subjects import` runs (importSubjects over
 * the file, with the configuration's e-services and index settings), timed, with its peak RSS
 * and its longest event-loop stall (what a daemon importing from its inbox would suffer).
 *
 *   node import-child.mjs <config.toml> <file.csv>
 *
 * Prints one JSON line: {imported, seconds, stallMs, peakRssMb}.
 */
import fs from 'node:fs';
import { loadConfig } from '../../dist/config/load.js';
import { openDatabase } from '../../dist/store/db.js';
import { importSubjects, subjectIndexOptions } from '../../dist/subjects/import.js';
import { stallMonitor } from './stall.mjs';

const [configFile, file] = process.argv.slice(2);
const config = await loadConfig(configFile);
const db = openDatabase(config.database);
const stall = stallMonitor();
const started = process.hrtime.bigint();
const report = await importSubjects(db, fs.createReadStream(file), {
  format: 'csv',
  source: file,
  eservices: config.eservices.map((e) => ({ id: e.id, name: e.name })),
  validate: config.subjects.validate,
  index: subjectIndexOptions(config),
});
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
const stallMs = stall.stop();
db.close();
const match = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
process.stdout.write(`${JSON.stringify({ imported: report.imported, rejected: report.rejectedCount, seconds, stallMs, peakRssMb: match ? Number(match[1]) / 1024 : null })}\n`);
