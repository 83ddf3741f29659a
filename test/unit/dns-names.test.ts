/** Name helpers: normalisation, reverse names, forwarder addresses. */
import { describe, expect, it } from 'vitest';
import { formatForwarder, ipToReverseName, isValidName, normalizeName, parseForwarder, reverseNameToIp } from '../../src/dns/index.js';

describe('names', () => {
  it('normalises case and the trailing dot', () => {
    expect(normalizeName('Web.AppSwitch.Local.')).toBe('web.appswitch.local');
    expect(normalizeName('.')).toBe('');
  });

  it('validates names', () => {
    expect(isValidName('web.appswitch.local')).toBe(true);
    expect(isValidName('_sip._tcp.example')).toBe(true);
    expect(isValidName('')).toBe(false);
    expect(isValidName('a..b')).toBe(false);
    expect(isValidName('-web')).toBe(false);
    expect(isValidName('x'.repeat(64))).toBe(false);
    expect(isValidName(Array.from({ length: 130 }, () => 'ab').join('.'))).toBe(false);
  });

  it('maps reverse names to addresses and back', () => {
    expect(reverseNameToIp('5.0.0.10.in-addr.arpa')).toBe('10.0.0.5');
    expect(ipToReverseName('10.0.0.5')).toBe('5.0.0.10.in-addr.arpa');
    const v6 = ipToReverseName('2001:db8::1');
    expect(v6).toBe('1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa');
    expect(reverseNameToIp(v6)).toBe('2001:db8::1');
    expect(reverseNameToIp(ipToReverseName('::ffff:10.0.0.5'))).toBe('10.0.0.5');
    for (const partial of ['0.10.in-addr.arpa', '256.0.0.10.in-addr.arpa', '05.0.0.10.in-addr.arpa', 'x.0.0.10.in-addr.arpa', '1.ip6.arpa', 'in-addr.arpa', 'web']) {
      expect(reverseNameToIp(partial)).toBeUndefined();
    }
    expect(() => ipToReverseName('web')).toThrow(expect.objectContaining({ code: 'ERR_DNS_BAD_ADDRESS' }));
  });

  it('parses forwarders', () => {
    expect(parseForwarder('1.1.1.1')).toEqual({ host: '1.1.1.1', port: 53 });
    expect(parseForwarder('127.0.0.1:5353')).toEqual({ host: '127.0.0.1', port: 5353 });
    expect(parseForwarder('2001:db8::1')).toEqual({ host: '2001:db8::1', port: 53 });
    expect(parseForwarder('[2001:db8::1]:5353')).toEqual({ host: '2001:db8::1', port: 5353 });
    expect(parseForwarder('[::1]')).toEqual({ host: '::1', port: 53 });
    expect(formatForwarder({ host: '::1', port: 53 })).toBe('[::1]:53');
    for (const bad of ['', 'dns.google', '1.1.1.1:0', '1.1.1.1:65536', '1.1.1.1:', '[1.1.1.1]:53', '[::1]:x', '1.1.1:53']) {
      expect(() => parseForwarder(bad), bad).toThrow(expect.objectContaining({ code: 'ERR_DNS_BAD_ADDRESS' }));
    }
  });
});
