// The local half of the DNS server, free of I/O: given a decoded query and the NameSource, decide whether to
// answer here (appswitch names, their reverse names, localhost, protocol errors) or to forward upstream.
// RFC 1035 (messages), RFC 2308 (NXDOMAIN/NODATA carry the SOA), RFC 6761 §6.3 (localhost), RFC 5952 (IPv6 text).

import net from 'node:net';
import type { Answer, DecodedPacket, Packet, Question } from 'dns-packet';
import { isInDomain, isValidName, normalizeName, reverseNameToIp } from './names.js';
import { buildResponse, OPCODE_QUERY, opcodeOf, Rcode } from './wire.js';

/** Addresses appswitch owns for one name. */
export interface OwnedAddresses {
  /** IPv4 literals; anything else is ignored. */
  a: string[];
  /** IPv6 literals; anything else is ignored. */
  aaaa: string[];
}

/**
 * Where the DNS server learns which names appswitch owns. Called synchronously on every query, so it must be
 * cheap (an in-memory table lookup); if it throws, that query gets SERVFAIL and the server keeps serving.
 */
export interface NameSource {
  /**
   * The addresses of `name` (lower-cased, no trailing dot, e.g. "web" or "web.appswitch.local"), or undefined
   * when appswitch does not own it. An owned name with empty lists is answered NOERROR without records.
   */
  lookup(name: string): OwnedAddresses | undefined;
  /**
   * The name owning address `ip` (dotted IPv4 or RFC 5952 IPv6, IPv4-mapped IPv6 given as IPv4), or undefined.
   * A name outside the domain ("web") is answered as "web.<domain>". Without this method, reverse lookups are
   * all forwarded.
   */
  reverse?(ip: string): string | undefined;
}

/** What the local answers depend on. */
export interface ResolverConfig {
  /** The appswitch domain, normalised ("appswitch.local"). */
  domain: string;
  /** TTL in seconds of every local record, and the negative-caching TTL (SOA MINIMUM). */
  ttl: number;
}

/** How a query is handled. */
export type Decision =
  /** Not a query (QR set): never answered, so two servers cannot ping-pong. */
  | { kind: 'drop'; reason: 'not-a-query' }
  /** Answered here. `outcome` says why; `response` carries the query's ID. */
  | { kind: 'answer'; outcome: 'local' | 'formerr' | 'notimp'; response: Packet }
  /** Sent to the forwarders. */
  | { kind: 'forward'; question: Question };

const LOOPBACK: OwnedAddresses = { a: ['127.0.0.1'], aaaa: ['::1'] };

/**
 * Decides how to handle `query`. Pure apart from calling `source` (whose exceptions propagate to the caller).
 */
export function decide(query: DecodedPacket, source: NameSource, cfg: ResolverConfig): Decision {
  if (query.type === 'response') return { kind: 'drop', reason: 'not-a-query' };
  if (opcodeOf(query) !== OPCODE_QUERY) {
    return { kind: 'answer', outcome: 'notimp', response: buildResponse(query, { rcode: Rcode.NOTIMP, authoritative: false }) };
  }
  const questions = query.questions ?? [];
  const q = questions[0];
  if (questions.length !== 1 || q === undefined) {
    return { kind: 'answer', outcome: 'formerr', response: buildResponse(query, { rcode: Rcode.FORMERR, authoritative: false }) };
  }
  const qclass = q.class ?? 'IN';
  const name = normalizeName(q.name);
  if ((qclass !== 'IN' && qclass !== 'ANY') || name === '') return { kind: 'forward', question: q };

  const local = (answers: Answer[], rcode: number = Rcode.NOERROR): Decision => {
    const authorities = answers.length === 0 ? [soa(cfg)] : [];
    const response = buildResponse(query, { rcode, authoritative: true, answers, authorities });
    return { kind: 'answer', outcome: 'local', response };
  };

  if (name === 'localhost' || name.endsWith('.localhost')) return local(addressRecords(q, LOOPBACK, cfg.ttl));

  if (name.endsWith('.in-addr.arpa') || name.endsWith('.ip6.arpa')) {
    const target = q.type === 'PTR' ? reverseTarget(name, source, cfg.domain) : undefined;
    if (target === undefined) return { kind: 'forward', question: q };
    return local([{ type: 'PTR', name: q.name, class: 'IN', ttl: cfg.ttl, data: target }]);
  }

  const inDomain = isInDomain(name, cfg.domain);
  let owned = source.lookup(name);
  if (owned === undefined && inDomain && name !== cfg.domain) owned = source.lookup(name.slice(0, -(cfg.domain.length + 1)));
  if (owned !== undefined) return local(addressRecords(q, owned, cfg.ttl));
  if (name === cfg.domain) return local(q.type === 'SOA' ? [soa(cfg)] : []);
  if (inDomain) return local([], Rcode.NXDOMAIN);
  return { kind: 'forward', question: q };
}

/** A, AAAA (or both for ANY) records of `owned` for the question; other types get none (NODATA). */
function addressRecords(q: Question, owned: OwnedAddresses, ttl: number): Answer[] {
  const qtype: string = q.type;
  const out: Answer[] = [];
  if (qtype === 'A' || qtype === 'ANY') {
    for (const ip of unique(owned.a)) if (net.isIPv4(ip)) out.push({ type: 'A', name: q.name, class: 'IN', ttl, data: ip });
  }
  if (qtype === 'AAAA' || qtype === 'ANY') {
    for (const ip of unique(owned.aaaa)) if (net.isIPv6(ip)) out.push({ type: 'AAAA', name: q.name, class: 'IN', ttl, data: ip });
  }
  return out;
}

/** The PTR target for a reverse name, or undefined when it is not ours to answer. */
function reverseTarget(name: string, source: NameSource, domain: string): string | undefined {
  const ip = reverseNameToIp(name);
  if (ip === undefined) return undefined;
  const owner = source.reverse?.(ip);
  if (typeof owner === 'string') {
    const n = normalizeName(owner);
    const fqdn = isInDomain(n, domain) ? n : `${n}.${domain}`;
    if (n !== '' && isValidName(fqdn)) return fqdn;
  }
  if (ip === '127.0.0.1' || ip === '::1') return 'localhost';
  return undefined;
}

/**
 * The SOA of the appswitch domain, put in the authority section of negative answers (RFC 2308 §3). It is also
 * used for negative answers about bare names ("web" AAAA) that sit outside the domain: stub resolvers only take
 * the negative TTL from it. MINIMUM = TTL, so negative answers are cached no longer than positive ones.
 */
function soa(cfg: ResolverConfig): Answer {
  return {
    type: 'SOA',
    name: cfg.domain,
    class: 'IN',
    ttl: cfg.ttl,
    data: {
      mname: cfg.domain,
      rname: `hostmaster.${cfg.domain}`,
      serial: 1,
      refresh: 3600,
      retry: 600,
      expire: 86400,
      minimum: cfg.ttl,
    },
  };
}

function unique(list: readonly string[]): string[] {
  return Array.isArray(list) ? [...new Set(list)] : [];
}
