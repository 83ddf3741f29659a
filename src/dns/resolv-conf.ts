// resolv.conf(5) reading (the host's nameservers become the default forwarders) and writing (what programs
// running under appswitch see).

import net from 'node:net';
import { DnsError } from './errors.js';
import { isValidName, normalizeName, validateDomain } from './names.js';

/**
 * The `nameserver` addresses of resolv.conf text, in file order, without duplicates. Comment lines (`#`, `;`),
 * other keywords and entries that are not IP literals are skipped, as glibc does; an IPv6 zone ("fe80::1%eth0")
 * is kept. Unlike glibc, entries past the third are kept too (they only ever serve as extra forwarders).
 */
export function readResolvConf(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line.startsWith('#') || line.startsWith(';')) continue;
    const tokens = line.split(/\s+/);
    if (tokens[0] !== 'nameserver' || tokens.length < 2) continue;
    const addr = tokens[1] ?? '';
    if (net.isIP(addr) === 0) continue;
    if (!out.includes(addr)) out.push(addr);
  }
  return out;
}

/**
 * The resolv.conf a program under appswitch sees: one `nameserver` (the appswitch DNS server; resolv.conf cannot
 * name a port, so it must listen on 53), `search <domain> <searchExtra...>` (duplicates dropped) and
 * `options ndots:1`, so a bare app name ("web") is first tried as "web.<domain>". `searchFirst` entries come
 * before `domain` (a project's own domain, see daemon/project-resolv.ts).
 * @throws DnsError ERR_DNS_BAD_ADDRESS when `server` is not an IP literal;
 *         ERR_DNS_BAD_CONFIG when `domain` or a search entry is not a valid name
 */
export function renderResolvConf(server: string, domain: string, searchExtra: string[] = [], searchFirst: string[] = []): string {
  if (typeof server !== 'string' || net.isIP(server) === 0) {
    throw new DnsError('ERR_DNS_BAD_ADDRESS', `nameserver ${JSON.stringify(server)} is not an IP address`);
  }
  const search: string[] = [];
  for (const s of [...searchFirst, domain, ...searchExtra]) {
    const n = s === domain ? validateDomain(domain) : typeof s === 'string' ? normalizeName(s.trim()) : '';
    if (!isValidName(n)) throw new DnsError('ERR_DNS_BAD_CONFIG', `search domain ${JSON.stringify(s)} is not a valid name`);
    if (!search.includes(n)) search.push(n);
  }
  return [
    '# Written by appswitch: app names resolve through the appswitch DNS server.',
    `nameserver ${server}`,
    `search ${search.join(' ')}`,
    'options ndots:1',
    '',
  ].join('\n');
}
