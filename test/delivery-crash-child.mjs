// A delivery process for the crash test: `run` delivers until killed; `drain` delivers what is
// pending, prints the result as JSON and exits. Runs the built code (dist/), as the daemon does.
import { openDatabase } from '../dist/store/db.js';
import { DeliveryService } from '../dist/sinks/delivery.js';

const [mode, dbFile, url] = process.argv.slice(2);
const db = openDatabase(dbFile);
const service = new DeliveryService({
  db,
  batchSize: 100,
  pollIntervalMs: 50,
  retryBaseMs: 10,
  retryMaxMs: 50,
  sinks: [{ type: 'webhook', name: 'hook', eservices: [], url, secretFile: undefined, caFile: undefined, batchSize: 1, timeoutMs: 10_000, maxRetries: 0 }],
});
if (mode === 'run') {
  service.start();
  process.stdout.write('started\n');
} else {
  const result = await service.drain();
  await service.stop(0);
  db.close();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
