import { z } from 'zod';
import { CLAIMS_HUB_REQUIRES, type VoucherClaimHubRequires } from './vouchers.js';

export const ROUTES = ['token', 'pull', 'status', 'push', 'crypto'] as const;
export type SimRoute = (typeof ROUTES)[number];

/**
 * What can go wrong on a route. `times` = how many requests it hits (default: until cleared);
 * `after` = how many matching requests it lets through first (default 0), so that a fault can
 * strike mid-run; `eserviceId` limits it to one e-service (pull and crypto routes).
 */
export type Fault = (
  | /** Answer this status instead of serving; with a problem body (`detail`, e.g. the hub's 403 texts) unless `problem: false`. */
    { kind: 'status'; status: number; problem?: boolean; code?: string; detail?: string; headers?: Record<string, string> }
  | /** Wait, then serve normally. */
    { kind: 'delay'; ms: number }
  | /** Destroy the socket without answering. */
    { kind: 'drop' }
  | /** Serve the real answer's headers (with its full Content-Length) and half its body, then close. */
    { kind: 'truncate' }
  | /** Answer 200 (or `status`, e.g. 206) with a body that is not JSON. */
    { kind: 'malformed'; status?: number }
  | /** Answer 200 with well-formed JSON of the wrong shape (default `{"unexpected":true}`). */
    { kind: 'wrongShape'; body?: unknown; status?: number }
  | /**
     * Serve the real answer's headers (full Content-Length), then its body `chunkBytes` (default 16)
     * at a time, one chunk every `intervalMs`: a peer never silent long enough to trip a read
     * timeout, yet never done in time.
     */
    { kind: 'drip'; intervalMs: number; chunkBytes?: number }
  | /**
     * Expire every voucher issued so far (as when they run out, or PDND's clock runs ahead), then
     * serve normally: this request's own voucher is then refused (401 `9001`), new ones are good.
     */
    { kind: 'expireVouchers' }
  | /**
     * Token route: this voucher is issued without `claim` (default `nbf`), then the request is
     * served. Signal Hub answers such a voucher 500 code `9990` (SPEC §10), not 401.
     */
    { kind: 'voucherLacksClaim'; claim?: VoucherClaimHubRequires }
) & { times?: number; after?: number; eserviceId?: string };

export const faultSchema: z.ZodType<Fault> = z.intersection(
  z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('status'), status: z.number().int().min(100).max(599), problem: z.boolean().optional(), code: z.string().optional(), detail: z.string().max(500).optional(), headers: z.record(z.string(), z.string()).optional() }),
    z.object({ kind: z.literal('delay'), ms: z.number().int().min(0).max(600_000) }),
    z.object({ kind: z.literal('drop') }),
    z.object({ kind: z.literal('truncate') }),
    z.object({ kind: z.literal('malformed'), status: z.number().int().min(200).max(299).optional() }),
    z.object({ kind: z.literal('wrongShape'), body: z.unknown().optional(), status: z.number().int().min(200).max(299).optional() }),
    z.object({ kind: z.literal('drip'), intervalMs: z.number().int().min(1).max(600_000), chunkBytes: z.number().int().positive().optional() }),
    z.object({ kind: z.literal('expireVouchers') }),
    z.object({ kind: z.literal('voucherLacksClaim'), claim: z.enum(CLAIMS_HUB_REQUIRES).optional() }),
  ]),
  z.object({ times: z.number().int().positive().optional(), after: z.number().int().nonnegative().optional(), eserviceId: z.string().optional() }),
) as z.ZodType<Fault>;

interface Armed {
  fault: Fault;
  /** Matching requests still to let through before the fault strikes. */
  skip: number;
  remaining: number;
}

/** Faults queued per route, first in first out: each applies `times` times, then the next. */
export class FaultBoard {
  private readonly queues = new Map<SimRoute, Armed[]>();
  private readonly fired = new Map<SimRoute, number>();

  inject(route: SimRoute, fault: Fault): void {
    const queue = this.queues.get(route) ?? [];
    queue.push({ fault, skip: fault.after ?? 0, remaining: fault.times ?? Number.POSITIVE_INFINITY });
    this.queues.set(route, queue);
  }

  /** Clears one route's faults, or all. */
  clear(route?: SimRoute): void {
    if (route) this.queues.delete(route);
    else this.queues.clear();
  }

  /** The fault that hits this request, if any, consuming one of its `times`. */
  take(route: SimRoute, eserviceId?: string): Fault | undefined {
    const queue = this.queues.get(route);
    if (!queue) return undefined;
    const index = queue.findIndex((a) => a.fault.eserviceId === undefined || a.fault.eserviceId === eserviceId);
    if (index < 0) return undefined;
    const armed = queue[index]!;
    if (armed.skip > 0) {
      armed.skip--;
      return undefined;
    }
    armed.remaining--;
    if (armed.remaining <= 0) queue.splice(index, 1);
    this.fired.set(route, (this.fired.get(route) ?? 0) + 1);
    return armed.fault;
  }

  firedCounts(): Partial<Record<SimRoute, number>> {
    return Object.fromEntries(this.fired);
  }
}
