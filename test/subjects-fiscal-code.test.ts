import { describe, expect, it } from 'vitest';
import { checkSubjectKey } from '../src/subjects/fiscal-code.js';
import { checkLetter, fiscalCode, legalPersonCode, omocode, withWrongCheck } from './fixtures/subjects-codes.js';

describe('fixture generator', () => {
  it('reproduces the check characters of published fiscal codes', () => {
    expect(checkLetter('RSSMRA80A01H501')).toBe('U');
    expect(checkLetter('MRTMTT25D09F205')).toBe('Z');
  });
});

describe('checkSubjectKey', () => {
  it('accepts published fiscal codes and partite IVA', () => {
    for (const key of ['RSSMRA80A01H501U', 'MRTMTT25D09F205Z', 'FLZCRN65R02E202N']) expect(checkSubjectKey(key)).toEqual({ valid: true, key, kind: 'person' });
    // Telecom Italia's partita IVA.
    expect(checkSubjectKey('00488410010')).toEqual({ valid: true, key: '00488410010', kind: 'legal-person' });
  });

  it('normalizes by trimming and upper-casing', () => {
    expect(checkSubjectKey('  rssmra80a01h501u\t')).toEqual({ valid: true, key: 'RSSMRA80A01H501U', kind: 'person' });
  });

  it('accepts generated codes, women (day + 40) and every degree of omocodia', () => {
    for (let n = 0; n < 500; n += 7) {
      const code = fiscalCode(n * 7919);
      expect(checkSubjectKey(code).valid).toBe(true);
      for (let count = 1; count <= 7; count++) expect(checkSubjectKey(omocode(code, count))).toMatchObject({ valid: true, kind: 'person' });
    }
    expect(checkSubjectKey(fiscalCode(42, '85T71Z404')).valid).toBe(true);
    expect(omocode('RSSMRA80A01H501U', 7)).toMatch(/^RSSMRAULALMHRLM[A-Z]$/);
  });

  it('accepts generated 11-digit codes and rejects a wrong check digit', () => {
    for (let n = 1; n < 100_000_000; n = n * 3 + 1) {
      const code = legalPersonCode(n);
      expect(checkSubjectKey(code)).toEqual({ valid: true, key: code, kind: 'legal-person' });
      expect(checkSubjectKey(withWrongCheck(code))).toEqual({ valid: false, reason: 'wrong check digit' });
    }
  });

  it('gives a reason for each kind of bad key, never containing the key', () => {
    const cases: [string, string][] = [
      [withWrongCheck('RSSMRA80A01H501U'), 'wrong check character'],
      [withWrongCheck(omocode('RSSMRA80A01H501U', 3)), 'wrong check character'],
      ['RSSMRA80A01H501', 'wrong length (15 characters; expected 16, or 11 digits)'],
      ['RSSMRA80A01H501UX', 'wrong length (17 characters; expected 16, or 11 digits)'],
      ['', 'missing key'],
      ['   ', 'missing key'],
      ['RSSMRA80A01H5-1U', 'invalid characters in fiscal code'],
      ['RSSMRA80A01H5A1U', 'malformed fiscal code'],
      ['1SSMRA80A01H501U', 'malformed fiscal code'],
      ['RSSMRA80Z01H501U', 'invalid month letter in fiscal code'],
      ['RSSMRA80A32H501U', 'invalid day of birth in fiscal code'],
      ['RSSMRA80A00H501U', 'invalid day of birth in fiscal code'],
      ['0048841001A', 'an 11-character key must be 11 digits'],
    ];
    for (const [key, reason] of cases) {
      const result = checkSubjectKey(key);
      expect(result, key).toEqual({ valid: false, reason });
      if (key.trim()) expect(reason).not.toContain(key.trim());
    }
  });
});
