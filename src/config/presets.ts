import type { PresetName } from './types.js';

export const PRESET_NAMES = ['production', 'uat', 'simulator'] as const satisfies readonly PresetName[];

/** The well-known endpoints an environment preset fills in (SPEC §3–4); the file may override each. */
export interface PresetValues {
  tokenUrl: string;
  assertionAudience: string;
  hubBaseUrl: string;
  /** Requests per second before the hub states its limit (SPEC §3: 25 production, 50 UAT). */
  initialRateLimit: number;
  /** The hub's time window (SPEC §10): 10 s on PDND's hubs; the simulator shows signals at once unless told otherwise. */
  timeWindowSeconds: number;
  /** Default crypto-info endpoint of an e-service; only the simulator knows it. */
  cryptoInfoUrl?: (eserviceId: string) => string;
}

export const DEFAULT_SIMULATOR_URL = 'http://127.0.0.1:8787';

/** Without a preset the URLs are required; this rate is the cautious production one. */
export const DEFAULT_INITIAL_RATE_LIMIT = 25;

export function presetValues(preset: PresetName, simulatorUrl: string = DEFAULT_SIMULATOR_URL): PresetValues {
  switch (preset) {
    case 'production':
      return {
        tokenUrl: 'https://auth.interop.pagopa.it/token.oauth2',
        assertionAudience: 'auth.interop.pagopa.it/client-assertion',
        hubBaseUrl: 'https://api.signalhub.interop.pagopa.it/1.0/pull',
        initialRateLimit: 25,
        timeWindowSeconds: 10,
      };
    case 'uat':
      // The UAT Signal Hub host is inferred, not documented (SPEC §3): the file can override it.
      return {
        tokenUrl: 'https://auth.uat.interop.pagopa.it/token.oauth2',
        assertionAudience: 'auth.uat.interop.pagopa.it/client-assertion',
        hubBaseUrl: 'https://api.uat.signalhub.interop.pagopa.it/1.0/pull',
        initialRateLimit: 50,
        timeWindowSeconds: 10,
      };
    case 'simulator': {
      const base = stripTrailingSlashes(simulatorUrl);
      return {
        tokenUrl: `${base}/token.oauth2`,
        assertionAudience: 'auth.simulator.local/client-assertion',
        hubBaseUrl: `${base}/1.0/pull`,
        initialRateLimit: 1000,
        timeWindowSeconds: 0,
        cryptoInfoUrl: (eserviceId) => `${base}/producers/${eserviceId}/pseudonymization`,
      };
    }
  }
}

export function stripTrailingSlashes(url: string): string {
  return url.replace(/\/+$/, '');
}
