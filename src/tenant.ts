/**
 * Tenants (SPEC §8c): a delegate keeps the subjects of each delegator apart by the delegator's
 * id. A tenant id is an operator-chosen label, typically the delegator's PDND tenant uuid or
 * its IPA code: short, and it travels in events, sink filters, metrics labels and log lines,
 * so only a conservative charset is accepted. Ids are lower-cased: uuids and IPA codes compare
 * without case, and "C_H501" and "c_h501" must not become two tenants.
 */

/** The consumer's own subjects, in the store and the outbox (events carry no `tenant`). */
export const OWN_TENANT = '';

/** How the own subjects are named where a tenant list is written (sink filters, CLI). */
export const OWN_TENANT_LABEL = '@own';

export const TENANT_MAX_LENGTH = 64;
const TENANT_PATTERN = /^[a-z0-9][a-z0-9_.-]*$/;
/** A person's fiscal code, omocodic variants included (digits replaced by L-V). */
const PERSONAL_FISCAL_CODE = /^[A-Z]{6}[0-9L-V]{2}[A-Z][0-9L-V]{2}[A-Z][0-9L-V]{3}[A-Z]$/;

/** The normalized tenant id, or why `raw` is not one (the message quotes at most a clipped, safe form). */
export function parseTenant(raw: string): { tenant: string } | { problem: string } {
  const value = raw.trim().toLowerCase();
  if (value === '') return { problem: 'empty tenant' };
  if (value.length > TENANT_MAX_LENGTH) return { problem: `tenant longer than ${TENANT_MAX_LENGTH} characters` };
  // A swapped column would put a person's fiscal code here, and a tenant id is logged. The
  // shape is enough: a mistyped code (wrong check character) is personal data too.
  if (PERSONAL_FISCAL_CODE.test(value.toUpperCase())) return { problem: 'tenant is a personal fiscal code (a swapped column?): a tenant is the delegator\'s id' };
  if (!TENANT_PATTERN.test(value)) {
    return { problem: 'tenant must be letters, digits, "_", "." or "-", starting with a letter or digit (a PDND tenant id or an IPA code)' };
  }
  return { tenant: value };
}

/** A tenant of a sink filter: an id, or OWN_TENANT_LABEL for the consumer's own subjects. */
export function parseTenantFilter(raw: string): { tenant: string } | { problem: string } {
  return raw.trim().toLowerCase() === OWN_TENANT_LABEL ? { tenant: OWN_TENANT } : parseTenant(raw);
}

/** How a tenant is shown to the operator (status, CLI). */
export function tenantLabel(tenant: string): string {
  return tenant === OWN_TENANT ? OWN_TENANT_LABEL : tenant;
}
