/** docs/openapi.yaml for tests: its operations, and a validator for the subset of OpenAPI 3.0 schemas the file
 * uses (type, nullable, enum, properties, required, additionalProperties, items, minItems/maxItems, minimum/maximum,
 * minLength/maxLength, allOf, $ref to #/components/..., format date-time). A keyword outside that subset is an
 * error, so the file cannot quietly use something the validator would ignore. Written here rather than adding ajv:
 * ajv speaks JSON Schema, not OpenAPI 3.0's dialect (nullable), and the subset is small. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { ROOT } from './hosts.js';

export type Schema = Record<string, unknown>;

export interface OpenApiDoc {
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Schema>; responses: Record<string, Response> };
}

export interface Parameter {
  name: string;
  in: 'query' | 'path';
  required?: boolean;
  schema: Schema;
}

export interface Response {
  $ref?: string;
  description: string;
  content?: Record<string, { schema: Schema }>;
}

export interface Operation {
  operationId: string;
  parameters?: Parameter[];
  requestBody?: { required: boolean; content: Record<string, { schema: Schema }> };
  responses: Record<string, Response>;
}

export const OPENAPI_FILE = path.join(ROOT, 'docs/openapi.yaml');

export function loadOpenApi(file = OPENAPI_FILE): OpenApiDoc {
  return parse(readFileSync(file, 'utf8')) as OpenApiDoc;
}

const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

/** Every operation: METHOD (upper case), path template, the operation. */
export function operations(doc: OpenApiDoc): Array<{ method: string; path: string; op: Operation }> {
  const out: Array<{ method: string; path: string; op: Operation }> = [];
  for (const [p, item] of Object.entries(doc.paths)) {
    for (const [m, op] of Object.entries(item)) if (HTTP_METHODS.includes(m)) out.push({ method: m.toUpperCase(), path: p, op });
  }
  return out;
}

/** Follows a local $ref (`#/components/schemas/X`, `#/components/responses/X`). */
export function deref<T>(doc: OpenApiDoc, v: T): T {
  const ref = (v as { $ref?: unknown }).$ref;
  if (typeof ref !== 'string') return v;
  if (!ref.startsWith('#/')) throw new Error(`only local $refs: ${ref}`);
  let cur: unknown = doc;
  for (const k of ref.slice(2).split('/')) {
    cur = (cur as Record<string, unknown> | undefined)?.[k];
    if (cur === undefined) throw new Error(`$ref ${ref} points nowhere`);
  }
  return deref(doc, cur as T);
}

/** The schema of an operation's answer with this status and content type (undefined: not described). */
export function responseSchema(doc: OpenApiDoc, op: Operation, status: number, contentType = 'application/json'): Schema | undefined {
  const r = op.responses[String(status)];
  if (!r) return undefined;
  return deref(doc, r).content?.[contentType]?.schema;
}

const ANNOTATIONS = new Set(['description', 'default', 'example', 'title', 'format', 'readOnly']);
const KNOWN = new Set([
  ...ANNOTATIONS,
  '$ref',
  'type',
  'nullable',
  'enum',
  'properties',
  'required',
  'additionalProperties',
  'items',
  'minItems',
  'maxItems',
  'minimum',
  'maximum',
  'minLength',
  'maxLength',
  'allOf',
]);

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

/** The ways `value` breaks `schema` (empty: it matches), each as "PATH: what". */
export function validate(doc: OpenApiDoc, schema: Schema, value: unknown, at = '$'): string[] {
  const s = deref(doc, schema);
  for (const k of Object.keys(s)) if (!KNOWN.has(k)) return [`${at}: the schema uses "${k}", which test/helpers/openapi.ts does not check`];
  const errs: string[] = [];
  if (value === null) return s.nullable === true ? [] : [`${at}: null, and the schema is not nullable`];
  for (const sub of (s.allOf as Schema[] | undefined) ?? []) errs.push(...validate(doc, sub, value, at));
  const t = s.type as string | undefined;
  if (t !== undefined) {
    const actual = typeOf(value);
    const ok = t === actual || (t === 'number' && actual === 'integer');
    if (!ok) return [...errs, `${at}: ${actual}, expected ${t}`];
  }
  if (Array.isArray(s.enum) && !s.enum.includes(value)) errs.push(`${at}: ${JSON.stringify(value)} is not one of ${JSON.stringify(s.enum)}`);
  if (typeof value === 'number') {
    if (typeof s.minimum === 'number' && value < s.minimum) errs.push(`${at}: ${value} < ${s.minimum}`);
    if (typeof s.maximum === 'number' && value > s.maximum) errs.push(`${at}: ${value} > ${s.maximum}`);
  }
  if (typeof value === 'string') {
    if (typeof s.minLength === 'number' && value.length < s.minLength) errs.push(`${at}: shorter than ${s.minLength}`);
    if (typeof s.maxLength === 'number' && value.length > s.maxLength) errs.push(`${at}: longer than ${s.maxLength}`);
    if (s.format === 'date-time' && !(/^\d{4}-\d\d-\d\dT/.test(value) && Number.isFinite(Date.parse(value)))) errs.push(`${at}: ${value} is not a date-time`);
  }
  if (Array.isArray(value)) {
    if (typeof s.minItems === 'number' && value.length < s.minItems) errs.push(`${at}: fewer than ${s.minItems} items`);
    if (typeof s.maxItems === 'number' && value.length > s.maxItems) errs.push(`${at}: more than ${s.maxItems} items`);
    if (s.items) value.forEach((v, i) => errs.push(...validate(doc, s.items as Schema, v, `${at}[${i}]`)));
  }
  if (typeOf(value) === 'object') {
    const o = value as Record<string, unknown>;
    const props = (s.properties as Record<string, Schema> | undefined) ?? {};
    for (const k of (s.required as string[] | undefined) ?? []) if (!Object.hasOwn(o, k)) errs.push(`${at}: lacks required "${k}"`);
    for (const [k, v] of Object.entries(o)) {
      if (Object.hasOwn(props, k)) errs.push(...validate(doc, props[k] as Schema, v, `${at}.${k}`));
      else if (s.additionalProperties === false) errs.push(`${at}: "${k}" is not in the schema`);
      else if (typeof s.additionalProperties === 'object' && s.additionalProperties !== null) {
        errs.push(...validate(doc, s.additionalProperties as Schema, v, `${at}.${k}`));
      }
    }
  }
  return errs;
}
