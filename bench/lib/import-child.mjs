/**
 * The subject import, in its own process: the code `subjects import` runs (importSubjects over
 * the file, with the configuration's e-services and index settings), timed, with its peak RSS
 * and its longest event-loop stall (what a daemon importing from its inbox would suffer).
 *
 *   node import-child.mjs <config.toml> <file.csv>
 *
 * Prints one JSON line: {imported, seconds, stallMs, peakRssMb, mainCpuS, cpuS}: the CPU time of
 * the main thread (Linux; null elsewhere) and of the whole process, which a busy host does not
 * stretch as it does the seconds.
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
const cpuBefore = process.cpuUsage();
const mainCpuBefore = mainThreadCpuSeconds();
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
const cpu = process.cpuUsage(cpuBefore);
const mainCpu = mainThreadCpuSeconds();
db.close();
const match = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
process.stdout.write(`${JSON.stringify({ imported: report.imported, rejected: report.rejectedCount, seconds, stallMs, peakRssMb: match ? Number(match[1]) / 1024 : null, mainCpuS: mainCpu === null || mainCpuBefore === null ? null : round2(mainCpu - mainCpuBefore), cpuS: round2((cpu.user + cpu.system) / 1e6) })}\n`);

/** User + system CPU seconds of the main thread (its task's stat: utime and stime, in clock ticks of 1/100 s). */
function mainThreadCpuSeconds() {
  try {
    const stat = fs.readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return null;
  }
}

function round2(x) {
  return Math.round(x * 100) / 100;
}
