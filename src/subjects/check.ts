/**
 * The checks of one record of a subject file: key, tenant, fiscal code, e-service names. Shared
 * by the import (src/subjects/import.ts) and the thread that reads and checks the file for it
 * (src/subjects/read-worker.ts): this module must stay free of the store and of anything that
 * logs, since it runs on that thread.
 */
import type { StagedRow } from '../store/subjects.js';
import { normalizeSubjectKey } from '../crypto/pseudonym.js';
import { checkSubjectKey } from './fiscal-code.js';
import { quoteSafely } from './redact.js';
import type { SubjectRecord } from './parse.js';
import { OWN_TENANT, parseTenant } from '../tenant.js';

export interface ConfiguredEService {
  id: string;
  name: string;
}

export interface RejectedRow {
  line: number;
  reason: string;
  ref?: string;
}

const MAX_KEY_LENGTH = 256;

export type EserviceResolver = (names: string[] | 'all' | undefined) => { ids: string[] | 'all' | undefined } | { unknown: string };

/** Rows name e-services by hub id (any case) or by configured name (any case). */
export function eserviceResolver(configured: ConfiguredEService[]): EserviceResolver {
  const byName = new Map<string, string>();
  for (const e of configured) byName.set(e.name.trim().toLowerCase(), e.id);
  // Ids win over names when a name happens to equal another e-service's id.
  for (const e of configured) byName.set(e.id.toLowerCase(), e.id);
  return (names) => {
    if (names === undefined || names === 'all') return { ids: names };
    const ids: string[] = [];
    for (const name of names) {
      const id = byName.get(name.toLowerCase());
      if (id === undefined) return { unknown: name };
      ids.push(id);
    }
    return { ids };
  };
}

export interface RecordRules {
  validate: boolean;
  /** --tenant, normalized. */
  fileTenant: string | undefined;
  replace: boolean;
}

/**
 * Checks a record: a rejection when its key is unusable (not staged), else the row to stage,
 * with its problem if any. A problem found here is reported unless the key repeats an earlier
 * row's (then "duplicate" is), except a bad tenant, reported first as before.
 */
export function checkRecord(record: SubjectRecord, rules: RecordRules, resolve: EserviceResolver): StagedRow | RejectedRow {
  const key = normalizeSubjectKey(record.key);
  if (key === '' || key.length > MAX_KEY_LENGTH) {
    const refPart = record.ref && normalizeSubjectKey(record.ref) !== key ? { ref: record.ref } : {};
    return { line: record.line, reason: key === '' ? 'missing key' : `key longer than ${MAX_KEY_LENGTH} characters`, ...refPart };
  }
  // A bad tenant counts as the tenant being replaced: --replace must not remove a stored
  // subject because its row in the new file has a problem.
  let tenant = rules.fileTenant ?? OWN_TENANT;
  let tenantProblem: string | undefined;
  if (record.tenant !== undefined) {
    const parsed = parseTenant(record.tenant);
    if ('problem' in parsed) tenantProblem = parsed.problem;
    else if (rules.fileTenant !== undefined && parsed.tenant !== rules.fileTenant) tenantProblem = `tenant ${JSON.stringify(parsed.tenant)} differs from --tenant ${JSON.stringify(rules.fileTenant)}`;
    else if (rules.fileTenant === undefined && rules.replace) tenantProblem = 'a row with a tenant under --replace: replace one tenant at a time with --tenant';
    else tenant = parsed.tenant;
  }
  const row: StagedRow = { key, tenant, line: record.line, problem: tenantProblem ?? null, problemFirst: tenantProblem !== undefined, ref: record.ref, eservices: undefined };
  if (row.problem !== null) return row;
  if (rules.validate) {
    const check = checkSubjectKey(key);
    if (!check.valid) return { ...row, problem: check.reason };
  }
  const resolved = resolve(record.eservices);
  if ('unknown' in resolved) return { ...row, problem: `unknown e-service ${quoteSafely(resolved.unknown, 80)} (not an id or name in the configuration)` };
  row.eservices = resolved.ids;
  return row;
}
