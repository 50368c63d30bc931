/** The zip mechanics of coffer: entry naming rules, a streaming zip writer and a hardened zip reader. */
export {
  ARCHIVE_TOP_LEVEL,
  DB_PREFIX,
  MANIFEST_ENTRY,
  UPLOAD_FOLDERS,
  VERSION_CONTENT,
  VERSION_ENTRY,
  EntryNameRegistry,
  checkEntryName,
  shouldStore,
  looksIncompressible,
  COMPRESSIBILITY_SAMPLE_BYTES,
  tableEntryName,
  type UploadFolder,
} from './entries';
export { createZipWriter, type PrecompressedMeta, type ZipEntryOptions, type ZipWriter, type ZipWriterOptions } from './zip-writer';
export { EntrySpool } from './spool';
export { BufferDeflater, type DeflatedBuffer } from './deflate-worker';
export { openZip, SMALL_ENTRY_BYTES, type OpenZipOptions, type ZipArchive, type ZipEntryInfo } from './zip-reader';
export { bufferSource, fileSource } from './sources';
