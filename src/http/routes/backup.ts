import { Router } from 'express';
import type { AppContext } from '../context';

export function backupRoutes(_ctx: AppContext): Router {
  return Router();
}
