import type { Voucher } from '../pdnd/vouchers.js';
import type { VoucherSource } from './types.js';

/** The part of the PDND VoucherProvider the hub needs (structural, so tests can pass any). */
export interface M2mVoucherProvider {
  m2m(): Promise<Voucher>;
  invalidate(rejected: Voucher): void;
}

/** The hub client's voucher source backed by the PDND voucher cache's M2M voucher. */
export function m2mVoucherSource(provider: M2mVoucherProvider): VoucherSource {
  return {
    get: async () => (await provider.m2m()).token,
    // The provider matches by token only; expiresAt is irrelevant to the comparison.
    invalidate: (rejected) => provider.invalidate({ token: rejected, expiresAt: 0 }),
  };
}
