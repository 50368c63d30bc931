import { Router } from 'express';
import { buildOpenApiDocument } from '../openapi';

/** GET /api/v1/openapi.json: the OpenAPI 3.1 document of every endpoint, public like the health check. */
export function openapiRoutes(): Router {
  const r = Router();
  r.get('/', (_req, res) => void res.json(buildOpenApiDocument()));
  return r;
}
