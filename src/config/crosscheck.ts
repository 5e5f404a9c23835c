import type { ConfigProblem } from '../errors.js';
import type { PresetName } from './types.js';
import { PRESET_NAMES } from './presets.js';
import { isPlainObject } from './env.js';

/**
 * Rules that span several keys, checked on the raw document so that they are reported in
 * the same pass as the per-key problems (a file with ten mistakes shows ten, not one).
 * Values of the wrong type are skipped here: the schema reports those.
 */
export function crossCheck(document: Record<string, unknown>): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const preset = presetOf(document);
  const pdnd = isPlainObject(document.pdnd) ? document.pdnd : undefined;

  if (document.simulator_url !== undefined && document.preset !== 'simulator') {
    problems.push({ path: 'simulator_url', message: 'only used with preset = "simulator"' });
  }
  if (preset === undefined && document.preset === undefined) {
    if (pdnd && pdnd.token_url === undefined) problems.push({ path: 'pdnd.token_url', message: 'required (or set preset)' });
    if (pdnd && pdnd.assertion_audience === undefined) problems.push({ path: 'pdnd.assertion_audience', message: 'required (or set preset)' });
    const hub = document.hub;
    if (hub === undefined || (isPlainObject(hub) && hub.base_url === undefined)) problems.push({ path: 'hub.base_url', message: 'required (or set preset)' });
  }

  // Warnings before data is lost: critical must come before the hub deletes anything, stale before critical.
  const alerts = isPlainObject(document.alerts) ? document.alerts : {};
  const hubTable = isPlainObject(document.hub) ? document.hub : {};
  const numberOr = (value: unknown, fallback: number): number | undefined => (value === undefined ? fallback : typeof value === 'number' && value > 0 ? value : undefined);
  const criticalDays = numberOr(alerts.critical_after_days, 25);
  const retentionDays = numberOr(hubTable.retention_days, 30);
  const staleHours = numberOr(alerts.stale_after_hours, 24);
  if (criticalDays !== undefined && retentionDays !== undefined && criticalDays >= retentionDays) {
    problems.push({ path: 'alerts.critical_after_days', message: `must be below hub.retention_days (${retentionDays}): at ${criticalDays} days the hub has already deleted signals, a warning then comes too late` });
  }
  if (criticalDays !== undefined && staleHours !== undefined && staleHours >= criticalDays * 24) {
    problems.push({ path: 'alerts.stale_after_hours', message: `must be below alerts.critical_after_days (${criticalDays} days = ${criticalDays * 24} hours)` });
  }

  const eservices = Array.isArray(document.eservices) ? document.eservices : [];
  const hasSharedClient = pdnd !== undefined && pdnd.eservice_client !== undefined;
  const CLIENT_KEYS = ['client_id', 'key_id', 'private_key_file'] as const;
  const firstById = new Map<string, number>();
  const firstByName = new Map<string, number>();
  eservices.forEach((eservice, i) => {
    if (!isPlainObject(eservice)) return;
    const set = CLIENT_KEYS.filter((key) => eservice[key] !== undefined);
    if (set.length === 0 && !hasSharedClient && pdnd !== undefined) {
      problems.push({ path: `eservices[${i}].client_id`, message: 'required (or set [pdnd.eservice_client])' });
    } else if (set.length > 0 && set.length < CLIENT_KEYS.length) {
      for (const key of CLIENT_KEYS.filter((k) => !set.includes(k))) {
        problems.push({ path: `eservices[${i}].${key}`, message: `required with ${set.join(' and ')} (an e-service client needs client_id, key_id and private_key_file)` });
      }
    }
    if (set.length === 0 && eservice.next_key_id !== undefined) {
      problems.push({ path: `eservices[${i}].next_key_id`, message: 'belongs to the e-service\'s own client: set client_id, key_id and private_key_file too, or put next_key_id in [pdnd.eservice_client]' });
    }
    const identity = isPlainObject(eservice.recipe) && eservice.recipe.encoding === 'identity';
    if (identity) {
      // SPEC §8b: the objectId is the subject key in clear. A seed setting here means the recipe
      // is probably wrong (a hashing producer set to identity matches nothing): say so.
      const unused = 'not used with recipe.encoding = "identity" (objectIds are subject keys in clear, no seed): remove it, or choose the producer\'s digest encoding';
      if (eservice.crypto_info_url !== undefined) problems.push({ path: `eservices[${i}].crypto_info_url`, message: unused });
      if (eservice.crypto_history === true) problems.push({ path: `eservices[${i}].crypto_history`, message: unused });
      if (isPlainObject(eservice.recipe) && eservice.recipe.template !== undefined) problems.push({ path: `eservices[${i}].recipe.template`, message: unused });
    } else if (eservice.crypto_info_url === undefined && preset !== 'simulator' && document.preset === preset) {
      problems.push({ path: `eservices[${i}].crypto_info_url`, message: 'required (defaults only with preset = "simulator")' });
    }
    noteDuplicate(eservice.id, i, firstById, 'id', problems, (v) => v.toLowerCase());
    noteDuplicate(eservice.name, i, firstByName, 'name', problems, (v) => v);
  });

  const sinks = Array.isArray(document.sinks) ? document.sinks : [];
  const firstSinkByName = new Map<string, number>();
  sinks.forEach((sink, i) => {
    if (!isPlainObject(sink)) return;
    if (typeof sink.name === 'string') {
      const first = firstSinkByName.get(sink.name);
      if (first === undefined) firstSinkByName.set(sink.name, i);
      else problems.push({ path: `sinks[${i}].name`, message: `duplicate of sinks[${first}].name` });
    }
    if (!Array.isArray(sink.eservices)) return;
    sink.eservices.forEach((ref, j) => {
      if (typeof ref !== 'string' || ref === '') return;
      const known = eservices.some((e) => isPlainObject(e) && refersToEService(ref, e));
      if (!known) problems.push({ path: `sinks[${i}].eservices[${j}]`, message: `no e-service with id or name "${ref.slice(0, 80)}"` });
    });
  });
  return problems;
}

function noteDuplicate(value: unknown, index: number, first: Map<string, number>, key: string, problems: ConfigProblem[], normalize: (v: string) => string): void {
  if (typeof value !== 'string' || value === '') return;
  const seen = first.get(normalize(value));
  if (seen === undefined) first.set(normalize(value), index);
  else problems.push({ path: `eservices[${index}].${key}`, message: `duplicate of eservices[${seen}].${key}` });
}

/** Whether a sink's e-service reference names this e-service: its name, or its id in any case. */
export function refersToEService(ref: string, eservice: { id?: unknown; name?: unknown }): boolean {
  return eservice.name === ref || (typeof eservice.id === 'string' && eservice.id.toLowerCase() === ref.toLowerCase());
}

/** The preset named in the document, if it is a valid one (an invalid one is the schema's problem). */
export function presetOf(document: Record<string, unknown>): PresetName | undefined {
  const value = document.preset;
  return (PRESET_NAMES as readonly unknown[]).includes(value) ? (value as PresetName) : undefined;
}
