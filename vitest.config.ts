import { defineConfig } from 'vitest/config';

// Native code, seccomp filters and network namespaces do not belong in worker threads: use forks.
export default defineConfig({
  test: {
    pool: 'forks',
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results.json' },
  },
});
