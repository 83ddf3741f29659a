#!/usr/bin/env node
// appswitch command line entry point (the compiled CLI lives in dist/).
import { main } from '../dist/src/cli/main.js';

main(process.argv).catch((e) => {
  process.stderr.write(`appswitch: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(125);
});
