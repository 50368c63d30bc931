import type { Express } from 'express';
import { z } from 'zod';
import { createApp, ROUTER_MOUNTS } from '../../src/http/app';
import type { AppContext } from '../../src/http/context';
import { errorBody } from '../../src/http/errors';
import { buildOpenApiDocument, type OpenApiDocument } from '../../src/http/openapi';
import { meAnswer } from '../../src/http/routes/auth';
import { healthAnswer } from '../../src/http/routes/health';
import { findingObject, memberObject, noteObject, projectObject, uploadObject } from '../../src/domain/objects';
import { silentLogger } from '../../src/log';
import { makeUser, startTestApp, type TestApp, type TestUser } from '../support/app';

const OPERATION_METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options', 'trace'] as const;

/** What a router 2.x layer exposes: a route (path and methods), or a mounted handler (a router has a stack). */
interface Layer {
  route?: { path: unknown; methods: Record<string, boolean> };
  handle: { stack?: Layer[] };
  match(path: string): unknown;
}

/** `/api/v1/projects` + `/:id/notes` as OpenAPI writes it: `/api/v1/projects/{id}/notes`. */
function openApiPath(prefix: string, routePath: string): string {
  return (prefix + (routePath === '/' ? '' : routePath)).replace(/:(\w+)/g, '{$1}');
}

/** `METHOD /path` of each route in a router's stack; anything the document could not say is an error. */
function routesOf(stack: Layer[], prefix: string): string[] {
  const out: string[] = [];
  for (const layer of stack) {
    if (layer.route) {
      const { path, methods } = layer.route;
      if (typeof path !== 'string' || /[*?{}()]/.test(path)) throw new Error(`route ${String(path)} under '${prefix}' is not a plain path with :params`);
      for (const method of Object.keys(methods)) {
        if (method === '_all') throw new Error(`route ${path} under '${prefix}' uses .all(): give its methods`);
        out.push(`${method.toUpperCase()} ${openApiPath(prefix, path)}`);
      }
    } else if (Array.isArray(layer.handle.stack)) {
      throw new Error(`a router is mounted inside '${prefix}': mount it from ROUTER_MOUNTS instead`);
    }
  }
  return out;
}

/**
 * Every (method, path) the app serves. Express keeps no mount path, so the routers are matched, in
 * order, with ROUTER_MOUNTS (createApp mounts exactly those); routes on the app itself count too.
 */
function servedRoutes(app: Express): string[] {
  const stack = (app.router as unknown as { stack: Layer[] }).stack;
  const routers = stack.filter((l) => !l.route && Array.isArray(l.handle.stack));
  expect(routers).toHaveLength(ROUTER_MOUNTS.length);
  const out = routesOf(stack.filter((l) => l.route), '');
  routers.forEach((layer, i) => {
    const [prefix] = ROUTER_MOUNTS[i];
    expect({ prefix, matches: Boolean(layer.match(prefix)) }).toEqual({ prefix, matches: true });
    out.push(...routesOf(layer.handle.stack!, prefix));
  });
  return out.sort();
}

function documentedRoutes(doc: OpenApiDocument): string[] {
  const out: string[] = [];
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const method of OPERATION_METHODS) if (item[method]) out.push(`${method.toUpperCase()} ${path}`);
  }
  return out.sort();
}

function coverage(served: string[], documented: string[]) {
  return { missingFromDocument: served.filter((r) => !documented.includes(r)), notServed: documented.filter((r) => !served.includes(r)) };
}

/** Every `$ref` string anywhere in the document. */
function refsIn(value: unknown, out: string[] = []): string[] {
  if (Array.isArray(value)) value.forEach((v) => refsIn(v, out));
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === '$ref' && typeof v === 'string') out.push(v);
      else refsIn(v, out);
    }
  }
  return out;
}

describe('the OpenAPI document (GET /api/v1/openapi.json)', () => {
  let app: TestApp;
  let ctx: AppContext;
  const doc = buildOpenApiDocument();

  beforeAll(async () => {
    app = await startTestApp();
    ctx = { config: app.config, pool: app.db.pool, log: silentLogger(), serverVersion: 'test' };
  });
  afterAll(async () => app.close());

  test('lists every route Express serves, and nothing Express does not serve', () => {
    const served = servedRoutes(createApp(ctx));
    expect(served).toContain('GET /api/v1/openapi.json');
    expect(coverage(served, documentedRoutes(doc))).toEqual({ missingFromDocument: [], notServed: [] });
  });

  test('a route added to a mounted router or to the app is seen as missing from the document', () => {
    const express = createApp(ctx);
    const stack = (express.router as unknown as { stack: Layer[] }).stack;
    const projects = stack.filter((l) => !l.route && Array.isArray(l.handle.stack))[ROUTER_MOUNTS.findIndex(([p]) => p === '/api/v1/projects')];
    (projects.handle as unknown as { put(path: string, fn: () => void): void }).put('/:id/archive', () => undefined);
    express.get('/api/v1/extra', () => undefined);
    expect(coverage(servedRoutes(express), documentedRoutes(doc)).missingFromDocument).toEqual(['GET /api/v1/extra', 'PUT /api/v1/projects/{id}/archive']);
  });

  test('is a structurally sound OpenAPI 3.1 document', () => {
    expect(doc.openapi).toMatch(/^3\.1\.\d+$/);
    expect(doc.info.title).toBeTruthy();
    const schemes = Object.keys(doc.components?.securitySchemes ?? {});
    expect(schemes.sort()).toEqual(['bearer', 'session']);
    const operationIds: string[] = [];
    for (const [path, item] of Object.entries(doc.paths ?? {})) {
      const templated = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
      for (const method of OPERATION_METHODS) {
        const operation = item[method];
        if (!operation) continue;
        const where = `${method.toUpperCase()} ${path}`;
        if (operation.operationId) operationIds.push(operation.operationId);
        const statuses = Object.keys(operation.responses ?? {});
        expect({ where, success: statuses.some((s) => /^[23]\d\d$/.test(s)) }).toEqual({ where, success: true });
        const params = (operation.parameters ?? []) as { in: string; name: string; required?: boolean }[];
        const pathParams = params.filter((p) => p.in === 'path');
        expect({ where, declared: pathParams.map((p) => p.name).sort() }).toEqual({ where, declared: templated });
        expect({ where, allRequired: pathParams.every((p) => p.required === true) }).toEqual({ where, allRequired: true });
        for (const requirement of operation.security ?? doc.security ?? []) {
          for (const name of Object.keys(requirement)) expect(schemes).toContain(name);
        }
      }
    }
    expect(new Set(operationIds).size).toBe(operationIds.length);
    expect(operationIds.length).toBe(documentedRoutes(doc).length);
    for (const ref of refsIn(doc)) {
      const [, kind, name] = /^#\/components\/(\w+)\/(.+)$/.exec(ref) ?? [];
      expect({ ref, resolves: !!(doc.components as Record<string, Record<string, unknown> | undefined>)?.[kind]?.[name] }).toEqual({ ref, resolves: true });
    }
  });

  test('is served as JSON without authentication', async () => {
    const res = await fetch(`${app.url}/api/v1/openapi.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/json/);
    expect(await res.json()).toEqual(JSON.parse(JSON.stringify(doc)));
  });

  describe('documents the answers the routes really send', () => {
    let user: TestUser;
    let other: TestUser;
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${app.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${user.token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as unknown };
    };
    // strict: a field the route sends but the document leaves out fails as well as a wrong type
    const exactly = (schema: z.ZodObject, value: unknown) => schema.strict().parse(value);

    beforeAll(async () => {
      user = await makeUser(app, 'openapi-owner', 'regular');
      other = await makeUser(app, 'openapi-member', 'regular');
    });

    test('health, me and errors', async () => {
      exactly(healthAnswer, (await call('GET', '/api/v1/health')).body);
      exactly(meAnswer, (await call('GET', '/api/v1/auth/me')).body);
      const missing = await call('GET', '/api/v1/projects/00000000-0000-4000-8000-000000000000');
      expect(missing.status).toBe(404);
      exactly(errorBody, missing.body);
    });

    test('projects, members, notes, findings and uploads', async () => {
      const project = (await call('POST', '/api/v1/projects', { name: 'Documented', tags: ['t'], settings: { a: 1 } })).body as { id: string };
      exactly(projectObject, project);
      const base = `/api/v1/projects/${project.id}`;
      exactly(memberObject, (await call('POST', `${base}/members`, { username: other.username })).body);
      const note = (await call('POST', `${base}/notes`, { title: 'root' })).body as { id: string };
      exactly(noteObject, (await call('POST', `${base}/notes`, { title: 'child', parent_id: note.id })).body);
      exactly(findingObject, (await call('POST', `${base}/findings`, { title: 'XSS', score: '7.5', confidence: 0.5, reference_code: 'R-1' })).body);
      const fd = new FormData();
      fd.append('file', new Blob([Buffer.from('hello')], { type: 'text/plain' }), 'hello.txt');
      const upload = await fetch(`${app.url}${base}/files`, { method: 'POST', headers: { authorization: `Bearer ${user.token}` }, body: fd });
      expect(upload.status).toBe(201);
      exactly(uploadObject, await upload.json());

      const lists: [string, z.ZodObject][] = [['', projectObject], ['/members', memberObject], ['/notes', noteObject], ['/findings', findingObject], ['/uploads', uploadObject]];
      for (const [suffix, schema] of lists) {
        const list = (await call('GET', suffix === '' ? '/api/v1/projects' : `${base}${suffix}`)).body as unknown[];
        expect(list.length).toBeGreaterThan(0);
        for (const item of list) exactly(schema, item);
      }
    });
  });
});
