import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers/cli.js';

/**
 * No publiccode.yml validator is published on the npm registry (the reference one,
 * publiccode-parser, is a Go program): this checks the keys the standard (0.4) marks
 * mandatory, their types and enumerated values, and what the catalogue enforces on lengths.
 */
const doc = parse(fs.readFileSync(path.join(ROOT, 'publiccode.yml'), 'utf8')) as Record<string, any>;
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string; license: string; engines: { node: string } };

describe('publiccode.yml', () => {
  it('has every mandatory key of standard 0.4 with allowed values', () => {
    expect(doc.publiccodeYmlVersion).toBe('0.4');
    expect(doc.name).toEqual(expect.any(String));
    expect(doc.url).toMatch(/^https:\/\//);
    expect(doc.platforms).toEqual(expect.arrayContaining(['linux']));
    expect(doc.categories.length).toBeGreaterThan(0);
    expect(['concept', 'development', 'beta', 'stable', 'obsolete']).toContain(doc.developmentStatus);
    expect(['standalone/mobile', 'standalone/iot', 'standalone/desktop', 'standalone/web', 'standalone/backend', 'standalone/other', 'addon', 'library', 'configurationFiles']).toContain(doc.softwareType);
    expect(['internal', 'contract', 'community', 'none']).toContain(doc.maintenance.type);
    expect(doc.maintenance.contacts.length).toBeGreaterThan(0);
    expect(typeof doc.localisation.localisationReady).toBe('boolean');
    expect(doc.localisation.availableLanguages.length).toBeGreaterThan(0);
  });

  it('describes the software in each language within the catalogue\'s lengths', () => {
    for (const [lang, d] of Object.entries(doc.description as Record<string, any>)) {
      expect(lang).toMatch(/^[a-z]{2,3}$/);
      expect(d.shortDescription.length, lang).toBeLessThanOrEqual(150);
      expect(d.longDescription.length, lang).toBeGreaterThanOrEqual(150);
      expect(d.longDescription.length, lang).toBeLessThanOrEqual(10000);
      expect(d.features.length, lang).toBeGreaterThan(0);
      for (const f of d.features) expect(f.length, f).toBeLessThanOrEqual(100);
    }
  });

  it('agrees with package.json (version, license) and the LICENSE file', () => {
    expect(doc.softwareVersion).toBe(pkg.version);
    expect(doc.legal.license).toBe(pkg.license);
    expect(fs.readFileSync(path.join(ROOT, 'LICENSE'), 'utf8')).toMatch(/^EUROPEAN UNION PUBLIC LICENCE v\. 1\.2/);
    expect(doc.releaseDate).toMatch(/^\d{4}-\d{2}-\d{2}$/);
  });
});
