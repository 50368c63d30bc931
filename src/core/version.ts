/** The application's name and version, in a module of its own so `coffer --version` loads nothing else. */
export const APP_NAME = 'coffer';
export const APP_VERSION = '0.1.0';
