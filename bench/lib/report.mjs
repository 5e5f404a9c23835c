/** The human table: each figure next to its limit (measured in the same run), ratio and target. */
export function formatTable(r) {
  const rows = [['benchmark', 'measured', 'limit (same run)', 'ratio', 'target', 'ok']];
  const ok = (pass) => (pass === null ? '-' : pass ? 'yes' : 'NO');
  const n = (x) => x.toLocaleString('en-US');
  if (r.import) {
    rows.push([`import ${n(r.import.subjects)} subjects`, `${r.import.seconds.toFixed(1)} s`, '-', '-', '<= 150 s at 10 M', r.import.subjects >= 10_000_000 ? ok(r.import.seconds <= 150) : '-']);
    rows.push(['  longest event-loop stall', `${r.import.stallMs} ms`, '-', '-', '<= 250 ms', ok(r.import.stallMs <= 250)]);
    rows.push(['  peak RSS', `${r.import.peakRssMb.toFixed(0)} MB`, '-', '-', '<= 250 MB', ok(r.import.peakRssMb <= 250)]);
  }
  if (r.reseed) {
    rows.push([`reseed ${n(r.reseed.subjects)} subjects`, `${r.reseed.seconds.toFixed(2)} s`, `${r.reseed.limitSeconds.toFixed(2)} s`, r.reseed.ratio.toFixed(2), '<= 1.5', ok(r.reseed.ratio <= 1.5)]);
    rows.push(['  time at 10 M', `${r.reseed.seconds.toFixed(2)} s`, '-', '-', '<= 20 s at 10 M', r.reseed.subjects >= 10_000_000 ? ok(r.reseed.seconds <= 20) : '-']);
    rows.push(['reseed peak RSS', `${r.reseed.peakRssMb.toFixed(0)} MB`, `${r.reseed.limitPeakRssMb.toFixed(0)} MB (bare loop)`, '-', '<= 250 MB', ok(r.reseed.peakRssMb <= 250)]);
    rows.push(['  longest event-loop stall', `${r.reseed.stallMs} ms`, `${r.reseed.limitStallMs} ms`, '-', '<= 250 ms', ok(r.reseed.stallMs <= 250)]);
    rows.push(['  bytes per stored pseudonym', `${r.reseed.bytesPerPseudonym} B`, '-', '-', '<= 24 B', ok(r.reseed.bytesPerPseudonym <= 24)]);
  }
  if (r.catchup) {
    rows.push([`catch-up ${n(r.catchup.signals)} signals`, `${n(r.catchup.signalsPerSec)} signals/s`, `${n(r.catchup.durableLimitSignalsPerSec)} signals/s (minimal durable)`, r.catchup.durableRatio.toFixed(2), '>= 0.90', ok(r.catchup.durableRatio >= 0.9)]);
    rows.push(['  against the fetch-only client', `${n(r.catchup.signalsPerSec)} signals/s`, `${n(r.catchup.limitSignalsPerSec)} signals/s`, r.catchup.ratio.toFixed(2), '(diagnostic)', '-']);
    if (r.catchup.withoutSignalLog) {
      const v = r.catchup.withoutSignalLog;
      rows.push(['  same, subjects.backfill = false', `${n(v.signalsPerSec)} signals/s`, `${n(r.catchup.limitSignalsPerSec)} signals/s`, v.ratio.toFixed(2), '(diagnostic)', '-']);
    }
    rows.push(['  hub ceiling at 25 req/s (production)', `${n(r.catchup.signalsPerSec)} signals/s`, '2,500 signals/s', (r.catchup.signalsPerSec / 2500).toFixed(1), '(context)', '-']);
  }
  if (r.paced) {
    rows.push([`paced catch-up (${r.paced.requests} requests)`, `${r.paced.requestsPerSec.toFixed(2)} req/s`, `${r.paced.limitRequestsPerSec} req/s`, r.paced.ratio.toFixed(3), '>= 0.90', ok(r.paced.ratio >= 0.9)]);
    rows.push(['paced 429 responses', String(r.paced.responses429), '-', '-', '0', ok(r.paced.responses429 === 0)]);
  }
  if (r.footprint) {
    const f = r.footprint;
    rows.push(['"run" idle RSS', f.idleRssMb === null ? 'n/a' : `${f.idleRssMb.toFixed(1)} MB`, '-', '-', '-', '-']);
    rows.push(['database per subject', `${n(f.dbBytesPerSubject)} B`, '-', '-', '-', '-']);
    rows.push(['  of which subjects + pseudonyms', `${n(f.subjectBytesPerSubject)} B`, '-', '-', '-', '-']);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  const line = (row) => row.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd();
  const m = r.machine;
  const out = [line(rows[0]), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.slice(1).map(line)];
  out.push('');
  out.push(`machine: ${m.cpus} x ${m.model}, ${m.totalMemGb} GB, ${m.os}, node ${m.node}; load average ${m.loadAvg1AtStart} at start, ${m.loadAvg1AtEnd} at end`);
  if (r.footprint?.idleNote) out.push(`note: ${r.footprint.idleNote}`);
  out.push(`total ${r.totalSeconds} s`);
  return `${out.join('\n')}\n`;
}
