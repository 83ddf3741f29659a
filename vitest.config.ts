import { defineConfig } from 'vitest/config';

// Native code, seccomp filters and network namespaces do not belong in worker threads: use forks.
export default defineConfig({
  test: {
    pool: 'forks',
    // integration files each start several daemons and many processes; on 2 cores they run one after another
    fileParallelism: false,
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results.json' },
  },
});
