/**
 * The OpenAPI 3.1 document of the HTTP API (GET /api/v1/openapi.json). It is generated from the zod
 * schemas the routes validate with and answer with, imported from where they live; this module only
 * says which schema belongs to which path, method and status. test/http/openapi.test.ts fails when a
 * route Express serves is missing here, or a path here is not served.
 */
import { OpenAPIRegistry, OpenApiGeneratorV31, type ResponseConfig, type RouteConfig } from '@asteasolutions/zod-to-openapi';
import { z } from 'zod';
import { ERROR_CODES, type ErrorCode } from '../core/errors';
import { backupObjectSchema, restoreObjectSchema } from '../core/jobs';
import { APP_VERSION } from '../core/manifest';
import { backupPolicyAnswer } from './routes/backup-policy';
import { findingObject, memberObject, noteObject, projectObject, uploadObject } from '../domain/objects';
import { findingInput, memberInput, noteInput, projectInput } from '../domain/projects';
import { UPLOAD_KINDS } from '../storage/uploads';
import { SESSION_COOKIE } from './auth';
import { errorBody } from './errors';
import { loginAnswer, loginInput, meAnswer } from './routes/auth';
import { backupInput } from './routes/backup';
import { BACKUP_KEY_HEADER, backupListAnswer, createBackupBody, listBackupsQuery, restoreBody, restoreListAnswer, storeDirectoryAnswer } from './routes/backups';
import { degradedAnswer, healthAnswer } from './routes/health';

export type OpenApiDocument = ReturnType<OpenApiGeneratorV31['generateDocument']>;

let built: OpenApiDocument | undefined;

/** The document, generated on first use (the schemas do not change while the process runs). */
export function buildOpenApiDocument(): OpenApiDocument {
  built ??= generateDocument();
  return built;
}

const AUTH: ErrorCode[] = ['E_UNAUTHENTICATED', 'E_FORBIDDEN'];
const NOT_FOUND: ErrorCode[] = [...AUTH, 'E_NOT_FOUND'];
/** What authorizeBackupAction can refuse for an action that needs BACKUP_KEY. */
const KEYED: ErrorCode[] = [...AUTH, 'E_BACKUP_DISABLED', 'E_VALIDATION', 'E_BACKUP_KEY_WRONG', 'E_RATE_LIMITED'];
const BODY_KEYED: ErrorCode[] = [...KEYED, 'E_UNSUPPORTED_MEDIA_TYPE', 'E_AES_KEY_INVALID', 'E_PASSPHRASE_INVALID'];

const uuidParam = (what: string) => z.uuid().describe(`${what} id`);
const bigintParam = (what: string) => z.string().regex(/^\d+$/).describe(`${what} id (decimal)`);
const uploadKindSegment = z.enum(Object.keys(UPLOAD_KINDS).flatMap((k) => [`${k}s`, k]) as [string, ...string[]]);

const projectPath = z.object({ id: uuidParam('project') });
const jobPath = (what: string) => z.object({ id: uuidParam(what) });
const backupKeyHeader = z.object({ [BACKUP_KEY_HEADER]: z.string().describe('BACKUP_KEY') });

/**
 * The schema as a named component (`#/components/schemas/<id>`). zod's own metadata, not the library's
 * `.openapi()`: that one needs zod patched before any schema is created, which the import order here
 * cannot promise.
 */
const component = <T extends z.ZodType>(id: string, schema: T): T => schema.meta({ id }) as T;
const json = (schema: z.ZodType) => ({ 'application/json': { schema } });
const answer = (description: string, schema: z.ZodType): ResponseConfig => ({ description, content: json(schema) });
/** Bytes, not JSON (OpenAPI 3.1 says so with contentMediaType rather than format: binary). */
const bytes = { schema: { type: 'string' as const, contentMediaType: 'application/octet-stream' } };
const textHeader = (description: string) => ({ schema: { type: 'string' as const }, description });
/** Headers sendError and the download route add to some error answers. */
const ERROR_HEADERS: Record<number, Record<string, { schema: { type: 'string' | 'integer' }; description: string }>> = {
  416: { 'Content-Range': { schema: { type: 'string' }, description: 'bytes */<size>' } },
  429: { 'Retry-After': { schema: { type: 'integer' }, description: 'seconds to wait' } },
};
const eventStream = (what: string): ResponseConfig => ({
  description:
    `Server-Sent Events until the ${what} ends: \`progress\` events while it changes, then one event named after its final status; ` +
    `the data of each is the ${what} object as JSON. \`error\` (data \`{message}\`) if following it fails.`,
  content: { 'text/event-stream': { schema: z.string() } },
});

function generateDocument(): OpenApiDocument {
  const registry = new OpenAPIRegistry();
  registry.registerComponent('securitySchemes', 'session', {
    type: 'apiKey',
    in: 'cookie',
    name: SESSION_COOKIE,
    description:
      'Set by POST /api/v1/auth/login. Requests that change state with it must send Content-Type: application/json (or X-Requested-With), else 403 E_FORBIDDEN.',
  });
  registry.registerComponent('securitySchemes', 'bearer', { type: 'http', scheme: 'bearer', description: 'An API token (`coffer users token NAME`).' });

  const ApiError = component('Error', errorBody);
  const Backup = component('Backup', backupObjectSchema);
  const Restore = component('Restore', restoreObjectSchema);
  const Project = component('Project', projectObject);
  const Member = component('Member', memberObject);
  const Note = component('Note', noteObject);
  const Finding = component('Finding', findingObject);
  const Upload = component('Upload', uploadObject);

  /** The error answers of an operation, one per status its codes map to (ERROR_CODES), and `default`. */
  function failures(codes: ErrorCode[]): Record<string, ResponseConfig> {
    const byStatus = new Map<number, ErrorCode[]>();
    for (const code of new Set(codes)) byStatus.set(ERROR_CODES[code].http, [...(byStatus.get(ERROR_CODES[code].http) ?? []), code]);
    const out: Record<string, ResponseConfig> = {};
    for (const [status, list] of [...byStatus].sort(([a], [b]) => a - b)) {
      out[status] = {
        description: list.map((c) => `\`${c}\``).join(', '),
        content: json(ApiError),
        ...(ERROR_HEADERS[status] ? { headers: ERROR_HEADERS[status] } : {}),
      };
    }
    out.default = { description: 'Any other failure (malformed body 400, 408, 413, 415, 500 `E_INTERNAL`…), always `{code, message}`', content: json(ApiError) };
    return out;
  }

  function op(route: Omit<RouteConfig, 'responses'> & { ok: RouteConfig['responses']; errors: ErrorCode[] }): void {
    const { ok, errors, ...rest } = route;
    registry.registerPath({ ...rest, responses: { ...ok, ...failures(errors) } });
  }
  const created = (what: string, schema: z.ZodType, location?: string): ResponseConfig => ({
    description: `The new ${what}`,
    content: json(schema),
    ...(location ? { headers: { Location: textHeader(location) } } : {}),
  });
  const noContent: ResponseConfig = { description: 'Done; no body' };
  const jsonBody = (schema: z.ZodType) => ({ required: true, content: json(schema) });

  // --- meta
  op({
    method: 'get', path: '/api/v1/health', tags: ['meta'], operationId: 'health', summary: 'Database status and version; whether backups are enabled',
    security: [],
    ok: { 200: answer('Up', healthAnswer), 503: answer('The database is down', degradedAnswer) },
    errors: [],
  });
  op({
    method: 'get', path: '/api/v1/openapi.json', tags: ['meta'], operationId: 'openapi', summary: 'This document (OpenAPI 3.1)',
    security: [],
    ok: { 200: answer('The OpenAPI document', z.record(z.string(), z.unknown())) },
    errors: [],
  });

  // --- auth
  op({
    method: 'post', path: '/api/v1/auth/login', tags: ['auth'], operationId: 'login', summary: 'Log in: sets the session cookie',
    description: 'Failures are rate-limited per client and user name, and take the same time for unknown users.',
    security: [],
    request: { body: jsonBody(loginInput) },
    ok: { 200: { ...answer('Logged in', loginAnswer), headers: { 'Set-Cookie': textHeader(`${SESSION_COOKIE}=…; HttpOnly; SameSite=Strict`) } } },
    errors: ['E_VALIDATION', 'E_BAD_CREDENTIALS', 'E_RATE_LIMITED'],
  });
  op({ method: 'post', path: '/api/v1/auth/logout', tags: ['auth'], operationId: 'logout', summary: 'End the session', ok: { 204: noContent }, errors: AUTH });
  op({ method: 'get', path: '/api/v1/auth/me', tags: ['auth'], operationId: 'me', summary: 'Who is asking, and how', ok: { 200: answer('The user', meAnswer) }, errors: AUTH });

  // --- projects: every path below a project answers 404 for a project the user may not see
  const P = '/api/v1/projects';
  const projectOp = (route: Omit<Parameters<typeof op>[0], 'tags'>) => op({ ...route, tags: ['projects'] });
  projectOp({ method: 'get', path: P, operationId: 'listProjects', summary: 'The projects you may see', ok: { 200: answer('Projects', z.array(Project)) }, errors: AUTH });
  projectOp({
    method: 'post', path: P, operationId: 'createProject', summary: 'Create a project (you own it)',
    request: { body: jsonBody(projectInput) },
    ok: { 201: created('project', Project) },
    errors: [...AUTH, 'E_VALIDATION'],
  });
  projectOp({ method: 'get', path: `${P}/{id}`, operationId: 'getProject', request: { params: projectPath }, ok: { 200: answer('The project', Project) }, errors: NOT_FOUND });
  projectOp({
    method: 'delete', path: `${P}/{id}`, operationId: 'deleteProject', summary: 'Delete a project with its notes, findings and uploads',
    request: { params: projectPath },
    ok: { 204: noContent },
    errors: NOT_FOUND,
  });

  projectOp({
    method: 'get', path: `${P}/{id}/members`, operationId: 'listMembers', summary: 'The owner (first) and the members',
    request: { params: projectPath },
    ok: { 200: answer('Members', z.array(Member)) },
    errors: NOT_FOUND,
  });
  projectOp({
    method: 'post', path: `${P}/{id}/members`, operationId: 'addMember', summary: 'Add an active regular user or superuser',
    request: { params: projectPath, body: jsonBody(memberInput) },
    ok: { 201: created('member', Member) },
    errors: [...NOT_FOUND, 'E_VALIDATION', 'E_CONFLICT'],
  });
  projectOp({
    method: 'delete', path: `${P}/{id}/members/{userId}`, operationId: 'removeMember', summary: 'Remove a member (a member may remove themselves)',
    request: { params: projectPath.extend({ userId: bigintParam('user') }) },
    ok: { 204: noContent },
    errors: NOT_FOUND,
  });

  const children = [
    { segment: 'notes', param: 'noteId', one: 'Note', schema: Note, input: noteInput, conflict: [] as ErrorCode[] },
    { segment: 'findings', param: 'findingId', one: 'Finding', schema: Finding, input: findingInput, conflict: ['E_CONFLICT'] as ErrorCode[] },
  ];
  for (const c of children) {
    const list = `${P}/{id}/${c.segment}`;
    const item = `${list}/{${c.param}}`;
    const itemPath = projectPath.extend({ [c.param]: bigintParam(c.one.toLowerCase()) });
    projectOp({ method: 'get', path: list, operationId: `list${c.one}s`, request: { params: projectPath }, ok: { 200: answer(`${c.one}s`, z.array(c.schema)) }, errors: NOT_FOUND });
    projectOp({
      method: 'post', path: list, operationId: `create${c.one}`,
      request: { params: projectPath, body: jsonBody(c.input) },
      ok: { 201: created(c.one.toLowerCase(), c.schema) },
      errors: [...NOT_FOUND, 'E_VALIDATION', ...c.conflict],
    });
    projectOp({ method: 'get', path: item, operationId: `get${c.one}`, request: { params: itemPath }, ok: { 200: answer(`The ${c.one.toLowerCase()}`, c.schema) }, errors: NOT_FOUND });
    projectOp({ method: 'delete', path: item, operationId: `delete${c.one}`, request: { params: itemPath }, ok: { 204: noContent }, errors: NOT_FOUND });
  }

  projectOp({ method: 'get', path: `${P}/{id}/uploads`, operationId: 'listUploads', request: { params: projectPath }, ok: { 200: answer('Uploads', z.array(Upload)) }, errors: NOT_FOUND });
  projectOp({
    method: 'post', path: `${P}/{id}/{kind}`, operationId: 'upload', summary: 'Upload one file (multipart field `file`), streamed to disk',
    description: "The file is stored under a generated name; the client's name is kept for display only. A client that hangs up mid-upload leaves nothing behind.",
    request: {
      params: projectPath.extend({ kind: uploadKindSegment.describe('upload kind (plural or singular)') }),
      body: { required: true, content: { 'multipart/form-data': { schema: { type: 'object', properties: { file: bytes.schema }, required: ['file'] } } } },
    },
    ok: { 201: created('upload', Upload) },
    errors: [...NOT_FOUND, 'E_VALIDATION', 'E_PAYLOAD_TOO_LARGE', 'E_UNSUPPORTED_MEDIA_TYPE', 'E_ABORTED'],
  });
  projectOp({
    method: 'get', path: `${P}/{id}/uploads/{uploadId}/content`, operationId: 'downloadUpload', summary: "An upload's bytes, as an attachment",
    request: { params: projectPath.extend({ uploadId: uuidParam('upload') }) },
    ok: {
      200: {
        description: 'The file, with the type declared at upload, X-Content-Type-Options: nosniff and a sandboxing Content-Security-Policy',
        headers: { 'Content-Disposition': textHeader('attachment; filename="<name>"') },
        content: { '*/*': bytes },
      },
    },
    errors: NOT_FOUND,
  });

  // --- the streaming backup (system users only)
  op({
    method: 'post', path: '/api/v1/utils/backup', tags: ['backup'], operationId: 'streamBackup', summary: 'Take a backup and stream it',
    description: 'Every check happens before the first byte; a failure after that cuts the connection, so a well-formed but incomplete archive is never received.',
    request: { body: jsonBody(backupInput) },
    ok: {
      200: {
        description: 'The archive (`backup-<UTC time>.zip`, `.zip.crypt` with a key or passphrase, `.zip.age` sealed to recipients); with `check: true` an empty body, nothing produced',
        headers: { 'Content-Disposition': textHeader('attachment; filename="backup-<time>.zip[.crypt|.age]"') },
        content: { 'application/zip': bytes, 'application/octet-stream': bytes },
      },
    },
    errors: [...BODY_KEYED, 'E_BACKUP_RUNNING'],
  });

  // --- stored backups and restores (system users only)
  const B = '/api/v1/backups';
  const backupOp = (route: Omit<Parameters<typeof op>[0], 'tags'>) => op({ ...route, tags: ['backups'] });
  const backupPath = jobPath('backup');
  backupOp({
    method: 'post', path: B, operationId: 'createBackup', summary: 'Queue a stored backup',
    request: { body: jsonBody(createBackupBody) },
    ok: { 202: created('backup job', Backup, '/api/v1/backups/{id}') },
    errors: BODY_KEYED,
  });
  backupOp({ method: 'get', path: B, operationId: 'listBackups', request: { query: listBackupsQuery }, ok: { 200: answer('Stored backups', backupListAnswer) }, errors: [...AUTH, 'E_VALIDATION'] });
  backupOp({ method: 'get', path: '/api/v1/backup-policy', operationId: 'backupPolicy', summary: 'How backups given no key are sealed (the configured age recipients)', ok: { 200: answer('The policy', backupPolicyAnswer) }, errors: AUTH });
  backupOp({ method: 'get', path: `${B}/directory`, operationId: 'backupDirectory', summary: 'Where stored backups are kept', ok: { 200: answer('The store', storeDirectoryAnswer) }, errors: AUTH });
  backupOp({ method: 'get', path: `${B}/{id}`, operationId: 'getBackup', request: { params: backupPath }, ok: { 200: answer('The backup', Backup) }, errors: NOT_FOUND });
  backupOp({ method: 'get', path: `${B}/{id}/events`, operationId: 'followBackup', request: { params: backupPath }, ok: { 200: eventStream('backup') }, errors: NOT_FOUND });
  backupOp({
    method: 'get', path: `${B}/{id}/download`, operationId: 'downloadBackup', summary: 'The stored archive (HEAD too); one byte range may be asked for',
    request: {
      params: backupPath,
      headers: backupKeyHeader.extend({
        range: z.string().optional().describe('one range, e.g. bytes=0-1023; several get the whole file'),
        'if-range': z.string().optional().describe('the ETag: the range only if the file is unchanged'),
        'if-none-match': z.string().optional().describe('the ETag: 304 if it matches'),
      }),
    },
    ok: {
      200: {
        description: 'The whole archive: application/zip, or application/octet-stream when encrypted',
        headers: { ETag: textHeader('"<sha256>"'), 'Accept-Ranges': textHeader('bytes'), 'Content-Disposition': textHeader('attachment; filename="<id>.zip[.crypt]"') },
        content: { 'application/zip': bytes, 'application/octet-stream': bytes },
      },
      206: {
        description: 'The range asked for',
        headers: { 'Content-Range': textHeader('bytes <start>-<end>/<size>'), ETag: textHeader('"<sha256>"') },
        content: { 'application/zip': bytes, 'application/octet-stream': bytes },
      },
      304: { description: 'Not modified (If-None-Match)' },
    },
    errors: [...KEYED, 'E_NOT_FOUND', 'E_NOT_FINISHED', 'E_BACKUP_MISSING', 'E_RANGE'],
  });
  backupOp({
    method: 'delete', path: `${B}/{id}`, operationId: 'deleteBackup', summary: 'Delete a stored backup, or cancel a queued or running one',
    request: { params: backupPath, headers: backupKeyHeader },
    ok: { 204: noContent },
    errors: [...KEYED, 'E_NOT_FOUND'],
  });

  const R = '/api/v1/restores';
  const restoreOp = (route: Omit<Parameters<typeof op>[0], 'tags'>) => op({ ...route, tags: ['restores'] });
  const restorePath = jobPath('restore');
  restoreOp({
    method: 'post', path: `${B}/{id}/restore`, operationId: 'restoreBackup', summary: 'Queue a restore of a finished backup (by default after a safety backup)',
    request: { params: backupPath, body: jsonBody(restoreBody) },
    ok: { 202: created('restore job', Restore, '/api/v1/restores/{id}') },
    errors: [...BODY_KEYED, 'E_NOT_FOUND', 'E_NOT_FINISHED', 'E_BACKUP_MISSING', 'E_CRYPT_KEY_REQUIRED'],
  });
  restoreOp({ method: 'get', path: R, operationId: 'listRestores', ok: { 200: answer('Restore jobs', restoreListAnswer) }, errors: AUTH });
  restoreOp({ method: 'get', path: `${R}/{id}`, operationId: 'getRestore', request: { params: restorePath }, ok: { 200: answer('The restore', Restore) }, errors: NOT_FOUND });
  restoreOp({ method: 'get', path: `${R}/{id}/events`, operationId: 'followRestore', request: { params: restorePath }, ok: { 200: eventStream('restore') }, errors: NOT_FOUND });

  return new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: '3.1.0',
    info: {
      title: 'coffer',
      version: APP_VERSION,
      description: 'Backup appliance for PostgreSQL-backed web services. Errors are always JSON `{code, message}`; the codes are listed in the README.',
    },
    security: [{ session: [] }, { bearer: [] }],
  });
}
