/**
 * Values read from a subject file may be keys in the wrong place (a file without a header, a
 * swapped column). Before a message quotes a column name, field name or e-service value, it
 * passes through here, so that a key-shaped value is never echoed.
 */

const KEY_SHAPE = /^(?:[A-Za-z0-9]{16}|[0-9]{11})$/;

export function looksLikeSubjectKey(value: string): boolean {
  const v = value.trim();
  return KEY_SHAPE.test(v) || /[0-9]{6,}/.test(v);
}

/** `"value"` (shortened), or a placeholder when the value could be personal data. */
export function quoteSafely(value: string, max = 60): string {
  if (looksLikeSubjectKey(value)) return '(value not shown: it looks like a subject key)';
  const v = value.trim();
  return JSON.stringify(v.length > max ? `${v.slice(0, max)}…` : v);
}
