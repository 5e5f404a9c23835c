/**
 * Validation of the subject keys a consumer loads: Italian fiscal codes of natural persons
 * (16 characters, DM 12/03/1974) and 11-digit codes of legal persons (partita IVA / codice
 * fiscale numerico). Keys are personal data: nothing here logs or echoes them, and the
 * reasons returned never contain the key.
 */
import { normalizeSubjectKey } from '../crypto/pseudonym.js';

export type SubjectKeyCheck = { valid: true; key: string; kind: 'person' | 'legal-person' } | { valid: false; reason: string };

/**
 * Omocodia: when two people would get the same code, the Agenzia delle Entrate replaces digits
 * (from the right) of positions 7, 8, 10, 11, 13, 14, 15 by these letters (0 -> L ... 9 -> V).
 */
const OMOCODE_LETTERS = 'LMNPQRSTUV';
/** 0-based positions that hold digits, possibly replaced by omocode letters. */
const DIGIT_POSITIONS = [6, 7, 9, 10, 12, 13, 14];
const MONTH_LETTERS = 'ABCDEHLMPRST';

/** Values of characters in odd positions (1st, 3rd, ...; 1-based) for the check character. */
const ODD_VALUES: Record<string, number> = {
  '0': 1, '1': 0, '2': 5, '3': 7, '4': 9, '5': 13, '6': 15, '7': 17, '8': 19, '9': 21,
  A: 1, B: 0, C: 5, D: 7, E: 9, F: 13, G: 15, H: 17, I: 19, J: 21, K: 2, L: 4, M: 18,
  N: 20, O: 11, P: 3, Q: 6, R: 8, S: 12, T: 14, U: 16, V: 10, W: 22, X: 25, Y: 24, Z: 23,
};

function evenValue(ch: string): number {
  const code = ch.charCodeAt(0);
  return code <= 57 ? code - 48 : code - 65;
}

/** The check character (16th) of the first 15 characters of a fiscal code (upper case). */
export function fiscalCodeCheckChar(first15: string): string {
  let sum = 0;
  for (let i = 0; i < 15; i++) {
    const ch = first15[i]!;
    // 1-based odd positions are 0-based even indexes.
    sum += i % 2 === 0 ? ODD_VALUES[ch]! : evenValue(ch);
  }
  return String.fromCharCode(65 + (sum % 26));
}

/** The check digit (11th) of the first 10 digits of a partita IVA / numeric fiscal code. */
export function legalPersonCheckDigit(first10: string): string {
  let sum = 0;
  for (let i = 0; i < 10; i++) {
    let d = first10.charCodeAt(i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return String((10 - (sum % 10)) % 10);
}

/** The digit an omocode-able position stands for, or -1 if the character is neither. */
function digitAt(code: string, index: number): number {
  const ch = code[index]!;
  if (ch >= '0' && ch <= '9') return ch.charCodeAt(0) - 48;
  return OMOCODE_LETTERS.indexOf(ch);
}

const PERSON_SHAPE = /^[A-Z]{6}[0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z]$/;

function checkPersonCode(code: string): string | null {
  if (!/^[A-Z0-9]{16}$/.test(code)) return 'invalid characters in fiscal code';
  if (!PERSON_SHAPE.test(code)) return 'malformed fiscal code';
  if (!MONTH_LETTERS.includes(code[8]!)) return 'invalid month letter in fiscal code';
  // Day of birth, +40 for women.
  const day = digitAt(code, 9) * 10 + digitAt(code, 10);
  if (!((day >= 1 && day <= 31) || (day >= 41 && day <= 71))) return 'invalid day of birth in fiscal code';
  if (fiscalCodeCheckChar(code.slice(0, 15)) !== code[15]) return 'wrong check character';
  return null;
}

function checkLegalPersonCode(code: string): string | null {
  if (legalPersonCheckDigit(code.slice(0, 10)) !== code[10]) return 'wrong check digit';
  return null;
}

/**
 * Normalizes (trim, upper case) and validates a subject key. Accepts 16-character fiscal codes
 * (omocodic ones included) and 11-digit codes of legal persons.
 */
export function checkSubjectKey(raw: string): SubjectKeyCheck {
  const key = normalizeSubjectKey(raw);
  if (key.length === 0) return { valid: false, reason: 'missing key' };
  if (key.length === 11 && /^[0-9]{11}$/.test(key)) {
    const reason = checkLegalPersonCode(key);
    return reason === null ? { valid: true, key, kind: 'legal-person' } : { valid: false, reason };
  }
  if (key.length === 16) {
    const reason = checkPersonCode(key);
    return reason === null ? { valid: true, key, kind: 'person' } : { valid: false, reason };
  }
  if (key.length === 11) return { valid: false, reason: 'an 11-character key must be 11 digits' };
  return { valid: false, reason: `wrong length (${key.length} characters; expected 16, or 11 digits)` };
}

/** Exposed for tests and fixture generators: positions that omocodia may turn into letters. */
export const OMOCODE_POSITIONS: readonly number[] = DIGIT_POSITIONS;
export { OMOCODE_LETTERS };
