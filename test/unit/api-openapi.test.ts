/** docs/openapi.yaml against the server's own route table (src/api/routes.ts), without a daemon: the same
 * operations, the same query and path parameters, error codes and statuses that agree; and the schema validator of
 * test/helpers/openapi.ts on values it must accept and refuse. The real daemon is checked against the file in
 * test/integration/http-api.test.ts. */
import { describe, expect, it } from 'vitest';
import { STATUS_OF } from '../../src/api/errors.js';
import { ROUTES } from '../../src/api/routes.js';
import { EVENT_TYPES } from '../../src/events/types.js';
import { deref, loadOpenApi, operations, type Schema, validate } from '../helpers/openapi.js';

const doc = loadOpenApi();
const ops = operations(doc);

describe('docs/openapi.yaml and the route table', () => {
  it('has exactly the server routes: no undocumented route, no documented route the server lacks', () => {
    const documented = ops.map((o) => `${o.method} ${o.path}`).sort();
    const served = ROUTES.map((r) => `${r.method} ${r.path}`).sort();
    expect(documented).toEqual(served);
  });

  it('each operation names the query and path parameters the route takes', () => {
    for (const r of ROUTES) {
      const op = ops.find((o) => o.method === r.method && o.path === r.path)?.op;
      const params = (op?.parameters ?? []).map((p) => deref(doc, p));
      expect(params.filter((p) => p.in === 'query').map((p) => p.name).sort(), r.path).toEqual(Object.keys(r.query).sort());
      const inPath = [...r.path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
      expect(params.filter((p) => p.in === 'path').map((p) => p.name), r.path).toEqual(inPath);
      expect(op?.requestBody !== undefined, `${r.method} ${r.path} body`).toBe(r.body);
      expect(op?.responses['200'], `${r.method} ${r.path}`).toBeDefined();
      expect(op?.responses['401'], `${r.method} ${r.path}: every route may answer 401 over TCP`).toBeDefined();
      expect(op?.responses['403'], `${r.method} ${r.path}: every route may answer 403`).toBeDefined();
    }
  });

  it('the Error schema lists every code the API answers with, and each documented status is its code status', () => {
    const codes = ((deref(doc, doc.components.schemas.Error as Schema).properties as Record<string, Schema>).error?.properties as Record<string, Schema>).code?.enum;
    expect([...(codes as string[])].sort()).toEqual(Object.keys(STATUS_OF).sort());
    for (const { op } of ops) {
      for (const status of Object.keys(op.responses)) {
        if (status === '200') continue;
        expect(Object.values(STATUS_OF), `${op.operationId} ${status}`).toContain(Number(status));
      }
    }
  });

  it('the event types are the server list', () => {
    expect(doc.components.schemas.EventType?.enum).toEqual([...EVENT_TYPES]);
  });
});

describe('the validator (test/helpers/openapi.ts)', () => {
  const schema = (name: string): Schema => ({ $ref: `#/components/schemas/${name}` });

  it('accepts what matches and names what does not', () => {
    const m = { name: 'n1', address: '192.0.2.1:7946', state: 'alive', incarnation: 3 };
    expect(validate(doc, schema('MemberView'), m)).toEqual([]);
    expect(validate(doc, schema('MemberView'), { ...m, incarnation: null })).toEqual([]);
    expect(validate(doc, schema('MemberView'), { ...m, state: 'gone' })).toEqual(['$.state: "gone" is not one of ["alive","suspect","dead","left","conflict"]']);
    expect(validate(doc, schema('MemberView'), { ...m, extra: 1 })).toEqual(['$: "extra" is not in the schema']);
    expect(validate(doc, schema('MemberView'), { name: 'n1' })).toHaveLength(3);
    expect(validate(doc, schema('MemberView'), { ...m, incarnation: 1.5 })).toEqual(['$.incarnation: number, expected integer']);
    expect(validate(doc, { type: 'array', items: schema('MemberView') }, [m, 'x'])).toEqual(['$[1]: string, expected object']);
  });

  it('nullable allOf (an exposure or null), formats, bounds', () => {
    expect(validate(doc, schema('ExposeResult'), { exposure: null, warning: 'w' })).toEqual([]);
    expect(validate(doc, schema('ExposeResult'), { exposure: { vip: 'x' } })).not.toEqual([]);
    expect(validate(doc, { type: 'string', format: 'date-time' }, 'yesterday')).toHaveLength(1);
    expect(validate(doc, { type: 'integer', minimum: 1, maximum: 2 }, 3)).toHaveLength(1);
  });

  it('refuses a schema keyword outside its subset', () => {
    expect(validate(doc, { oneOf: [] }, 1)[0]).toContain('does not check');
  });
});
