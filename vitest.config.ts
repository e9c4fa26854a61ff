import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['__test__/**/*.test.ts'],
    globalSetup: ['__test__/global-setup.ts'],
    // Native addon + Rust thread pools: separate processes, and room for CPU-bound tests.
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
