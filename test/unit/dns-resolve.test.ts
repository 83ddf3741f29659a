/** The pure query decision: what is answered locally, what is forwarded. */
import dnsPacket from 'dns-packet';
import type { DecodedPacket, Packet, RecordClass, RecordType } from 'dns-packet';
import { describe, expect, it } from 'vitest';
import { decide, type Decision, type NameSource } from '../../src/dns/index.js';

const cfg = { domain: 'appswitch.local', ttl: 5 };

function q(name: string, type: string, klass: string = 'IN'): DecodedPacket {
  // through the wire, so the decoded form is exactly what the server sees
  return dnsPacket.decode(
    dnsPacket.encode({ type: 'query', id: 1, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: type as RecordType, class: klass as RecordClass }] }),
  );
}

function answered(d: Decision): DecodedPacket {
  if (d.kind !== 'answer') throw new Error(`expected an answer, got ${d.kind}`);
  return dnsPacket.decode(dnsPacket.encode(d.response as Packet));
}

function rcode(p: DecodedPacket): string {
  return (p as DecodedPacket & { rcode: string }).rcode;
}

const source: NameSource = {
  lookup: (name) =>
    ({
      web: { a: ['10.0.0.5', '10.0.0.5', 'not-an-ip', 'fd00::1'], aaaa: ['fd00::5', '10.0.0.9'] },
      'api.v2': { a: ['10.0.0.7'], aaaa: [] },
      empty: { a: [], aaaa: [] },
    })[name],
  reverse: (ip) => ({ '10.0.0.5': 'web', '10.0.0.7': 'api.v2.appswitch.local', '10.0.0.8': 'bad name!' })[ip],
};

describe('decide', () => {
  it('keeps only valid, distinct addresses of the right family', () => {
    expect(answered(decide(q('web', 'A'), source, cfg)).answers?.map((a) => a.type === 'A' && a.data)).toEqual(['10.0.0.5']);
    expect(answered(decide(q('web', 'AAAA'), source, cfg)).answers?.map((a) => a.type === 'AAAA' && a.data)).toEqual(['fd00::5']);
    expect(answered(decide(q('web', 'ANY'), source, cfg)).answers?.map((a) => a.type)).toEqual(['A', 'AAAA']);
  });

  it('answers names with dots below the domain, and NODATA for an owned name without addresses', () => {
    expect(answered(decide(q('api.v2.appswitch.local', 'A'), source, cfg)).answers?.[0]).toMatchObject({ data: '10.0.0.7' });
    const e = answered(decide(q('empty.appswitch.local', 'A'), source, cfg));
    expect(rcode(e)).toBe('NOERROR');
    expect(e.authorities?.[0]?.type).toBe('SOA');
  });

  it('answers NXDOMAIN below an app name and SOA / NODATA at the domain apex', () => {
    expect(rcode(answered(decide(q('x.web.appswitch.local', 'A'), source, cfg)))).toBe('NXDOMAIN');
    const soa = answered(decide(q('appswitch.local', 'SOA'), source, cfg));
    expect(soa.answers?.[0]).toMatchObject({ type: 'SOA', name: 'appswitch.local' });
    const apexA = answered(decide(q('appswitch.local', 'A'), source, cfg));
    expect(rcode(apexA)).toBe('NOERROR');
    expect(apexA.answers).toEqual([]);
  });

  it('answers PTR with a name inside the domain, and forwards what it does not know', () => {
    expect(answered(decide(q('7.0.0.10.in-addr.arpa', 'PTR'), source, cfg)).answers?.[0]).toMatchObject({ data: 'api.v2.appswitch.local' });
    expect(decide(q('8.0.0.10.in-addr.arpa', 'PTR'), source, cfg).kind).toBe('forward'); // invalid name from source
    expect(decide(q('9.0.0.10.in-addr.arpa', 'PTR'), source, cfg).kind).toBe('forward');
    expect(decide(q('5.0.0.10.in-addr.arpa', 'A'), source, cfg).kind).toBe('forward');
    expect(decide(q('0.10.in-addr.arpa', 'PTR'), source, cfg).kind).toBe('forward');
    expect(decide(q('9.0.0.10.in-addr.arpa', 'PTR'), { lookup: () => undefined }, cfg).kind).toBe('forward');
  });

  it('forwards other classes, the root and outside names', () => {
    expect(decide(q('version.bind', 'TXT', 'CH'), source, cfg).kind).toBe('forward');
    expect(decide(q('web', 'A', 'CH'), source, cfg).kind).toBe('forward');
    expect(decide(q('.', 'NS'), source, cfg).kind).toBe('forward');
    expect(decide(q('example.com', 'A'), source, cfg).kind).toBe('forward');
  });

  it('never answers a response', () => {
    const resp = dnsPacket.decode(dnsPacket.encode({ type: 'response', id: 1, questions: [{ name: 'web', type: 'A' }] }));
    expect(decide(resp, source, cfg)).toEqual({ kind: 'drop', reason: 'not-a-query' });
  });

  it('echoes RD and CD, sets RA and AA, and copies the DO bit into its OPT record', () => {
    const query = dnsPacket.decode(
      dnsPacket.encode({
        type: 'query',
        id: 4,
        flags: dnsPacket.RECURSION_DESIRED | dnsPacket.CHECKING_DISABLED,
        questions: [{ name: 'web', type: 'A' }],
        additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 4096, extendedRcode: 0, ednsVersion: 0, flags: dnsPacket.DNSSEC_OK, flag_do: true, options: [] }],
      }),
    );
    const r = answered(decide(query, source, cfg));
    expect(r).toMatchObject({ id: 4, flag_qr: true, flag_aa: true, flag_rd: true, flag_cd: true, flag_ra: true, flag_tc: false });
    expect(r.additionals).toEqual([expect.objectContaining({ type: 'OPT', udpPayloadSize: 1232, flag_do: true })]);
  });
});
