import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/helpers/global-setup.ts'],
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Tests that spawn daemons and simulators are I/O bound; two cores run two files at a time well.
    maxWorkers: 2,
    minWorkers: 1,
  },
});
