// Public API of the appswitch DNS server (answers app names, forwards the rest).

export { DnsServer, DEFAULT_DOMAIN } from './server.js';
export type { DnsServerOptions, DnsServerStats, DnsServerPorts } from './server.js';
export type { NameSource, OwnedAddresses, ResolverConfig, Decision } from './resolve.js';
export { decide } from './resolve.js';
export { readResolvConf, renderResolvConf } from './resolv-conf.js';
export { DnsError } from './errors.js';
export type { DnsErrorCode } from './errors.js';
export type { DnsLogger } from './log.js';
export { silentDnsLogger } from './log.js';
export type { DnsSocketFactory } from './sockets.js';
export { nodeSocketFactory } from './sockets.js';
export type { Forwarder } from './names.js';
export { parseForwarder, formatForwarder, ipToReverseName, reverseNameToIp, normalizeName, isValidName } from './names.js';
