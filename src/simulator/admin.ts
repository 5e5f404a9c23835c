import { z } from 'zod';
import { ENCODINGS } from '../crypto/pseudonym.js';
import { json, problem, type SimResponse } from './http.js';
import { ROUTES, faultSchema } from './faults.js';
import type { SimState } from './state.js';
import { depositForSubject, generateSignals } from './deposits.js';

/**
 * `/_sim/*`: the control API, so that a simulator started in another process (the CLI
 * command, benchmarks) can be configured and steered. Loopback only, no authentication.
 */
const clientSchema = z.object({
  clientId: z.string().min(1),
  kind: z.enum(['m2m', 'eservice']),
  keyId: z.string().min(1),
  publicKey: z.string().min(1),
  organizationId: z.string().min(1),
  purposes: z.array(z.union([z.string().min(1), z.object({ id: z.string().min(1), eserviceId: z.string().min(1) })])).optional(),
});

export const eserviceSchema = z.object({
  id: z.string().min(1),
  producerAudience: z.string().min(1).optional(),
  organizationIds: z.array(z.string()).optional(),
  seed: z.string().min(1).nullable().optional(),
  cryptoHashFunction: z.string().min(1).optional(),
  recipe: z.object({ template: z.string().min(1), encoding: z.enum(ENCODINGS) }).optional(),
  historyDepth: z.number().int().min(1).optional(),
  includeSignalId: z.boolean().optional(),
  requireAudit: z.boolean().optional(),
  requireDpop: z.boolean().optional(),
  dpopNonce: z.boolean().optional(),
  forbiddenWithoutProblem: z.boolean().optional(),
  staleReads: z.number().int().min(0).optional(),
});

const depositSchema = z.object({
  eserviceId: z.string().min(1),
  signals: z
    .array(z.object({ signalType: z.string().min(1), objectId: z.string(), objectType: z.string(), signalId: z.number().int().positive().optional(), visibleAt: z.number().optional() }))
    .optional(),
  subjects: z.array(z.object({ subjectKey: z.string().min(1), signalType: z.string().min(1), objectType: z.string().optional() })).optional(),
  generate: z.number().int().min(0).max(10_000_000).optional(),
});

const settingsSchema = z.object({
  timeWindowMs: z.number().int().min(0).optional(),
  rateLimit: z.object({ limit: z.number().int().positive(), intervalMs: z.number().int().positive() }).optional(),
  voucherTtlSeconds: z.number().int().positive().optional(),
});

export async function handleAdmin(state: SimState, method: string, path: string, query: URLSearchParams, rawBody: string): Promise<SimResponse> {
  const body = <T>(schema: z.ZodType<T>): T => {
    let value: unknown;
    try {
      value = rawBody === '' ? {} : JSON.parse(rawBody);
    } catch {
      throw new AdminError('body is not JSON');
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) throw new AdminError(parsed.error.issues.map((i) => `${i.path.join('.') || '(body)'}: ${i.message}`).join('; '));
    return parsed.data;
  };
  try {
    switch (`${method} ${path}`) {
      case 'GET /_sim/stats':
        return json(200, state.stats());
      case 'POST /_sim/faults': {
        const { route, fault } = body(z.object({ route: z.enum(ROUTES), fault: faultSchema }));
        state.faults.inject(route, fault);
        return json(200, { ok: true });
      }
      case 'DELETE /_sim/faults': {
        const route = query.get('route');
        if (route !== null && !(ROUTES as readonly string[]).includes(route)) throw new AdminError(`route must be one of ${ROUTES.join(', ')}`);
        state.faults.clear((route ?? undefined) as (typeof ROUTES)[number] | undefined);
        return json(200, { ok: true });
      }
      case 'POST /_sim/clients':
        state.registerClient(body(clientSchema));
        return json(200, { ok: true });
      case 'DELETE /_sim/clients/keys': {
        const clientId = query.get('clientId');
        const keyId = query.get('keyId');
        if (!clientId || !keyId) throw new AdminError('clientId and keyId query parameters are required');
        state.revokeClientKey(clientId, keyId);
        return json(200, { ok: true });
      }
      case 'POST /_sim/eservices':
        state.addEService(body(eserviceSchema));
        return json(200, { ok: true });
      case 'POST /_sim/rotate': {
        const { eserviceId, seed } = body(z.object({ eserviceId: z.string().min(1), seed: z.string().min(1).optional() }));
        return json(200, { signalId: state.rotateSeed(eserviceId, seed) });
      }
      case 'POST /_sim/deposit': {
        const d = body(depositSchema);
        const ids: number[] = [];
        for (const s of d.signals ?? []) ids.push(state.deposit(d.eserviceId, s));
        for (const s of d.subjects ?? []) ids.push(depositForSubject(state, d.eserviceId, s.subjectKey, s.signalType, s.objectType));
        let count = ids.length;
        let first = ids[0] ?? null;
        let last = ids.at(-1) ?? null;
        if (d.generate) {
          const range = generateSignals(state, d.eserviceId, d.generate);
          count += d.generate;
          first ??= range.first;
          last = range.last;
        }
        return json(200, { count, firstSignalId: first, lastSignalId: last });
      }
      case 'POST /_sim/purge': {
        const { eserviceId, upToSignalId } = body(z.object({ eserviceId: z.string().min(1), upToSignalId: z.number().int().min(0) }));
        return json(200, { purged: state.eservice(eserviceId).signals.purgeUpTo(upToSignalId) });
      }
      case 'POST /_sim/settings': {
        const s = body(settingsSchema);
        if (s.timeWindowMs !== undefined) state.settings.timeWindowMs = s.timeWindowMs;
        if (s.rateLimit !== undefined) state.limiter.settings = s.rateLimit;
        if (s.voucherTtlSeconds !== undefined) state.settings.voucherTtlSeconds = s.voucherTtlSeconds;
        return json(200, { ok: true });
      }
      default:
        return problem(404, 'NotFound', `no simulator control route ${method} ${path}`);
    }
  } catch (err) {
    if (err instanceof AdminError) return problem(400, 'BadRequest', err.message);
    if (err instanceof Error && (err as { code?: string }).code === 'INPUT_INVALID') return problem(400, 'BadRequest', err.message);
    throw err;
  }
}

class AdminError extends Error {}
