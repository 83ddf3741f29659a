// Domain-name helpers on presentation-format names (as dns-packet decodes them): normalisation, validation,
// reverse names (RFC 1035 §3.5 in-addr.arpa, RFC 3596 §2.5 ip6.arpa) and forwarder "ip[:port]" addresses.

import net from 'node:net';
import ipaddr from 'ipaddr.js';
import { DnsError } from './errors.js';

/** Lower-cases a name and drops one trailing dot; the root ("." or "") becomes "". */
export function normalizeName(name: string): string {
  const n = name.toLowerCase();
  return n.endsWith('.') ? n.slice(0, -1) : n;
}

const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * True when `name` (normalised, no trailing dot) is a usable host name: 1..127 labels of 1..63 letters, digits,
 * hyphens or underscores (no leading/trailing hyphen), 253 characters at most.
 */
export function isValidName(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  return name.split('.').every((l) => LABEL.test(l));
}

/**
 * Normalises and checks the appswitch domain.
 * @throws DnsError ERR_DNS_BAD_CONFIG when it is not a valid name
 */
export function validateDomain(domain: string): string {
  const d = typeof domain === 'string' ? normalizeName(domain.trim()) : '';
  if (!isValidName(d)) throw new DnsError('ERR_DNS_BAD_CONFIG', `DNS domain ${JSON.stringify(domain)} is not a valid name`);
  return d;
}

/** True when `name` is `domain` itself or below it (both normalised). */
export function isInDomain(name: string, domain: string): boolean {
  return name === domain || name.endsWith(`.${domain}`);
}

const OCTET = /^(0|[1-9]\d{0,2})$/;
const NIBBLE = /^[0-9a-f]$/;

/**
 * The address a full reverse name stands for: "5.0.0.10.in-addr.arpa" → "10.0.0.5",
 * 32-nibble ".ip6.arpa" names → RFC 5952 text ("2001:db8::1"; IPv4-mapped addresses come back as IPv4).
 * Partial names (a /8 or /16 zone), bad labels or other names → undefined. `name` must be normalised.
 */
export function reverseNameToIp(name: string): string | undefined {
  if (name.endsWith('.in-addr.arpa')) {
    const labels = name.slice(0, -'.in-addr.arpa'.length).split('.');
    if (labels.length !== 4 || !labels.every((l) => OCTET.test(l) && Number(l) <= 255)) return undefined;
    return labels.reverse().join('.');
  }
  if (name.endsWith('.ip6.arpa')) {
    const labels = name.slice(0, -'.ip6.arpa'.length).split('.');
    if (labels.length !== 32 || !labels.every((l) => NIBBLE.test(l))) return undefined;
    const hex = labels.reverse().join('');
    const groups: string[] = [];
    for (let i = 0; i < 32; i += 4) groups.push(hex.slice(i, i + 4));
    const a = ipaddr.IPv6.parse(groups.join(':'));
    return a.isIPv4MappedAddress() ? a.toIPv4Address().toString() : a.toString();
  }
  return undefined;
}

/**
 * The reverse name of an address: "10.0.0.5" → "5.0.0.10.in-addr.arpa"; IPv6 → 32 nibbles + ".ip6.arpa".
 * @throws DnsError ERR_DNS_BAD_ADDRESS when `ip` is not an IP literal
 */
export function ipToReverseName(ip: string): string {
  if (!ipaddr.isValid(ip) || net.isIP(ip) === 0) throw new DnsError('ERR_DNS_BAD_ADDRESS', `not an IP address: ${ip}`);
  const a = ipaddr.parse(ip);
  if (a.kind() === 'ipv4') return `${a.toByteArray().reverse().join('.')}.in-addr.arpa`;
  const nibbles: string[] = [];
  for (const b of a.toByteArray()) nibbles.push((b >> 4).toString(16), (b & 0xf).toString(16));
  return `${nibbles.reverse().join('.')}.ip6.arpa`;
}

/** An upstream DNS server. `host` is an IP literal without brackets. */
export interface Forwarder {
  host: string;
  port: number;
}

/**
 * Parses a forwarder: "1.1.1.1", "1.1.1.1:5353", "2001:db8::1", "[2001:db8::1]:5353" (port defaults to 53).
 * @throws DnsError ERR_DNS_BAD_ADDRESS when malformed
 */
export function parseForwarder(spec: string): Forwarder {
  const bad = (): DnsError => new DnsError('ERR_DNS_BAD_ADDRESS', `forwarder ${JSON.stringify(spec)} is not "ip" or "ip:port"`);
  if (typeof spec !== 'string') throw bad();
  const s = spec.trim();
  let host: string;
  let portStr: string | undefined;
  const bracket = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(s);
  if (bracket !== null) {
    host = bracket[1] ?? '';
    portStr = bracket[2];
    if (!net.isIPv6(host)) throw bad();
  } else {
    const colons = s.split(':').length - 1;
    if (colons === 1) {
      const i = s.indexOf(':');
      host = s.slice(0, i);
      portStr = s.slice(i + 1);
      if (!/^\d{1,5}$/.test(portStr)) throw bad();
    } else {
      host = s;
    }
    if (net.isIP(host) === 0) throw bad();
  }
  const port = portStr === undefined ? 53 : Number(portStr);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad();
  return { host, port };
}

/** "ip:port", IPv6 bracketed: for logs. */
export function formatForwarder(f: Forwarder): string {
  return net.isIPv6(f.host) ? `[${f.host}]:${f.port}` : `${f.host}:${f.port}`;
}
