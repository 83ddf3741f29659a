/** A trap handler's configuration for unit tests: a node 'self' at 192.0.2.1, vips in 10.0.0.0/8, a small port
 * pool, the default policy, silent logs; `over` replaces or adds fields. */
import pino from 'pino';
import { defaultPolicy } from '../../src/policy/policy.js';
import { VirtualRanges } from '../../src/table/addresses.js';
import { PortPool } from '../../src/table/port-pool.js';
import type { ServiceTable } from '../../src/table/service-table.js';
import type { HandlerConfig } from '../../src/trap/handler.js';

export function handlerConfig(table: ServiceTable, over: Partial<HandlerConfig> = {}): HandlerConfig {
  return {
    nodeName: 'self',
    nodeAddress: '192.0.2.1',
    ranges: new VirtualRanges(['10.0.0.0/8']),
    table,
    pool: new PortPool(40000, 40010),
    log: pino({ level: 'silent' }),
    policy: defaultPolicy(),
    lb: 'round-robin',
    ...over,
  };
}
