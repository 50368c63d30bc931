import fs from 'node:fs';
import type { Readable } from 'node:stream';
import { Router, type Request, type Response } from 'express';
import busboy from 'busboy';
import { CofferError, errorMessage } from '../../core/errors';
import * as domain from '../../domain/projects';
import { removeUpload, resolveUploadPath, storeUpload, uploadKindNamed, type UploadKind } from '../../storage/uploads';
import { requireUser } from '../auth';
import type { AppContext } from '../context';

function uploadKind(value: string): UploadKind {
  const kind = uploadKindNamed(value);
  if (!kind) throw new CofferError('E_NOT_FOUND', `unknown upload kind '${value}' (files, images or assets)`);
  return kind;
}

// busboy reduces a part's type to `type/subtype` (text/plain when absent); checked again before it is
// stored, since it is sent back as a response header.
const MEDIA_TYPE_RE = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$/i;

interface ReceivedUpload {
  name: string;
  contentType: string;
  storagePath: string;
  size: number;
  sha256: Buffer;
}

/**
 * Accepts exactly one multipart field named "file", streamed to disk under a generated name. A client
 * that goes away mid-body, or sends more than the limit, leaves nothing behind: the file stream is
 * destroyed and storeUpload removes its temporary file before this rejects.
 */
async function receiveUpload(ctx: AppContext, req: Request, kind: UploadKind) {
  if (!req.is('multipart/form-data')) throw new CofferError('E_UNSUPPORTED_MEDIA_TYPE', 'upload must be multipart/form-data with a "file" field');
  return new Promise<ReceivedUpload>((resolve, reject) => {
    let bb: busboy.Busboy;
    try {
      bb = busboy({ headers: req.headers, defParamCharset: 'utf8', limits: { files: 1, fileSize: ctx.config.uploadMaxBytes, fields: 10 } });
    } catch (err) {
      return reject(new CofferError('E_VALIDATION', `malformed multipart request: ${errorMessage(err)}`));
    }
    let pending: Promise<void> | undefined;
    let result: ReceivedUpload | undefined;
    let fileStream: Readable | undefined;
    const stopReading = () => {
      req.unpipe(bb);
      req.resume();
    };
    // Without an end of the body busboy would wait for ever, holding the temporary file open.
    req.on('close', () => {
      if (req.complete) return;
      const gone = new CofferError('E_ABORTED', 'the client closed the connection before the upload was complete');
      stopReading();
      if (fileStream) fileStream.destroy(gone);
      else reject(gone);
    });
    bb.on('file', (field, stream, info) => {
      if (field !== 'file') {
        stream.resume();
        return;
      }
      fileStream = stream;
      // The client's name is kept only as a display name (base name, no control characters).
      // eslint-disable-next-line no-control-regex -- stripping control characters is the point
      const name = (info.filename || 'upload').split(/[\\/]/).pop()!.replace(/[\x00-\x1f\x7f]/g, '').slice(0, 255) || 'upload';
      const contentType = MEDIA_TYPE_RE.test(info.mimeType ?? '') ? info.mimeType.toLowerCase() : 'application/octet-stream';
      // storeUpload listens for the stream's errors from the moment it is called, below.
      stream.on('limit', () => stream.destroy(new CofferError('E_PAYLOAD_TOO_LARGE', `upload exceeds the limit of ${ctx.config.uploadMaxBytes} bytes`)));
      pending = storeUpload(ctx.config.dataDir, kind, stream, ctx.config.uploadMaxBytes).then((stored) => {
        result = { name, contentType, ...stored };
      });
      // A failed upload is answered at once; the rest of the request body is drained and discarded.
      pending.catch((err) => {
        stopReading();
        reject(err);
      });
    });
    bb.on('error', (err) => reject(new CofferError('E_VALIDATION', `malformed multipart request: ${errorMessage(err)}`)));
    bb.on('close', () => {
      if (!pending) return reject(new CofferError('E_VALIDATION', 'multipart request has no "file" field'));
      pending.then(() => resolve(result!), reject);
    });
    req.pipe(bb);
  });
}

export function projectRoutes(ctx: AppContext): Router {
  const r = Router();
  r.use(requireUser);
  // Who may do what is decided in src/domain (access.ts): every call passes the acting user.

  r.get('/', async (req, res) => void res.json(await domain.listProjects(ctx.pool, req.user)));
  r.post('/', async (req, res) => void res.status(201).json(await domain.createProject(ctx.pool, req.user, domain.parseInput(domain.projectInput, req.body))));
  r.get('/:id', async (req, res) => void res.json(await domain.getProject(ctx.pool, req.user, req.params.id)));
  r.delete('/:id', async (req, res) => {
    const paths = await domain.deleteProject(ctx.pool, req.user, req.params.id);
    await Promise.all(paths.map((p) => removeUpload(ctx.config.dataDir, p).catch((err) => req.log.warn({ err: errorMessage(err) }, 'could not remove upload'))));
    res.status(204).end();
  });

  r.get('/:id/members', async (req, res) => void res.json(await domain.listMembers(ctx.pool, req.user, req.params.id)));
  r.post('/:id/members', async (req, res) => void res.status(201).json(await domain.addMember(ctx.pool, req.user, req.params.id, domain.parseInput(domain.memberInput, req.body))));
  r.delete('/:id/members/:userId', async (req, res) => {
    await domain.removeMember(ctx.pool, req.user, req.params.id, req.params.userId);
    res.status(204).end();
  });

  r.get('/:id/notes', async (req, res) => void res.json(await domain.listNotes(ctx.pool, req.user, req.params.id)));
  r.post('/:id/notes', async (req, res) => void res.status(201).json(await domain.createNote(ctx.pool, req.user, req.params.id, domain.parseInput(domain.noteInput, req.body))));
  r.get('/:id/notes/:noteId', async (req, res) => void res.json(await domain.getNote(ctx.pool, req.user, req.params.id, req.params.noteId)));
  r.delete('/:id/notes/:noteId', async (req, res) => {
    await domain.deleteNote(ctx.pool, req.user, req.params.id, req.params.noteId);
    res.status(204).end();
  });

  r.get('/:id/findings', async (req, res) => void res.json(await domain.listFindings(ctx.pool, req.user, req.params.id)));
  r.post('/:id/findings', async (req, res) => void res.status(201).json(await domain.createFinding(ctx.pool, req.user, req.params.id, domain.parseInput(domain.findingInput, req.body))));
  r.get('/:id/findings/:findingId', async (req, res) => void res.json(await domain.getFinding(ctx.pool, req.user, req.params.id, req.params.findingId)));
  r.delete('/:id/findings/:findingId', async (req, res) => {
    await domain.deleteFinding(ctx.pool, req.user, req.params.id, req.params.findingId);
    res.status(204).end();
  });

  r.get('/:id/uploads', async (req, res) => void res.json(await domain.listUploads(ctx.pool, req.user, req.params.id)));
  r.post('/:id/:kind', async (req: Request, res: Response) => {
    const projectId = req.params.id as string;
    await domain.authorizeUpload(ctx.pool, req.user, projectId);
    const kind = uploadKind(req.params.kind as string);
    const up = await receiveUpload(ctx, req, kind);
    try {
      const row = await domain.recordUpload(ctx.pool, req.user, { projectId, kind, ...up });
      res.status(201).json(row);
    } catch (err) {
      await removeUpload(ctx.config.dataDir, up.storagePath).catch(() => undefined);
      throw err;
    }
  });
  r.get('/:id/uploads/:uploadId/content', async (req, res) => {
    const row = await domain.getUpload(ctx.pool, req.user, req.params.id, req.params.uploadId);
    const file = resolveUploadPath(ctx.config.dataDir, row.storage_path);
    // attachment() also sets a type from the name's extension: the stored type is set after it.
    res.attachment(row.name);
    res.setHeader('Content-Type', row.content_type);
    res.setHeader('Content-Length', String(row.size));
    res.setHeader('X-Content-Type-Options', 'nosniff');
    // Opened in a browser tab anyway, an uploaded page runs no script and loads nothing.
    res.setHeader('Content-Security-Policy', "default-src 'none'; sandbox");
    const stream = fs.createReadStream(file);
    stream.on('error', (err) => {
      req.log.error({ err: errorMessage(err) }, 'upload content unreadable');
      if (!res.headersSent) res.status(500).json({ code: 'E_INTERNAL', message: 'stored file is unreadable' });
      else res.destroy();
    });
    stream.pipe(res);
  });

  return r;
}
